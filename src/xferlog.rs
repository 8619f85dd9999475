//! The xferlog transfer log (the wu-ftpd/vsftpd format FTP operators already parse):
//! one line per finished download or upload, appended by one writer task, reopened on
//! SIGHUP so logrotate can move the file away.
//!
//! `format_record` is pure; only the writer task touches the file.

use crate::vocab::TransferType;
use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::codec::TransferKind;

/// One finished transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the transfer ended.
    pub end: chrono::DateTime<chrono::Utc>,
    pub seconds: u64,
    pub remote_host: String,
    pub bytes: u64,
    pub path: String,
    pub transfer_type: TransferType,
    pub kind: TransferKind,
    pub user: String,
    pub complete: bool,
}

/// Users that log in anonymously, as FTP servers conventionally name them.
fn is_anonymous(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}

/// One xferlog line (without the newline): `ctime transfer-time remote-host bytes
/// filename a|b _ o|i a|r username ftp 0 * c|i`. Blanks inside fields become `_`
/// so the fields stay splittable, as vsftpd does.
pub fn format_record(r: &Record) -> String {
    let field = |s: &str| -> String {
        let cleaned: String = s
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        if cleaned.is_empty() {
            "-".into()
        } else {
            cleaned
        }
    };
    format!(
        "{} {} {} {} {} {} _ {} {} {} ftp 0 * {}",
        r.end.format("%a %b %e %H:%M:%S %Y"),
        r.seconds.max(1),
        field(&r.remote_host),
        r.bytes,
        field(&r.path),
        match r.transfer_type {
            TransferType::Image => 'b',
            TransferType::Ascii => 'a',
        },
        if r.kind == TransferKind::Upload {
            'i'
        } else {
            'o'
        },
        if is_anonymous(&r.user) { 'a' } else { 'r' },
        field(&r.user),
        if r.complete { 'c' } else { 'i' },
    )
}

enum Message {
    Record(String),
    Reopen(PathBuf),
}

/// The handle transfer tasks log through; cheap to clone.
#[derive(Clone)]
pub struct XferLog {
    tx: mpsc::UnboundedSender<Message>,
}

impl XferLog {
    /// Starts the writer task for `path`.
    pub fn start(path: PathBuf) -> XferLog {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(path, rx));
        XferLog { tx }
    }

    pub fn record(&self, r: &Record) {
        let _ = self.tx.send(Message::Record(format_record(r)));
    }

    /// Closes the file and opens `path` (the same one after logrotate moved it).
    pub fn reopen(&self, path: PathBuf) {
        let _ = self.tx.send(Message::Reopen(path));
    }
}

async fn open(path: &PathBuf) -> Option<tokio::fs::File> {
    match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the xferlog");
            None
        }
    }
}

async fn writer(mut path: PathBuf, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut file = open(&path).await;
    while let Some(message) = rx.recv().await {
        match message {
            Message::Record(line) => {
                let Some(f) = file.as_mut() else { continue };
                if let Err(e) = f.write_all(format!("{line}\n").as_bytes()).await {
                    tracing::error!(path = %path.display(), error = %e, "cannot write the xferlog");
                }
            }
            Message::Reopen(new) => {
                path = new;
                file = open(&path).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record() -> Record {
        Record {
            end: chrono::Utc.with_ymd_and_hms(2026, 11, 4, 6, 14, 6).unwrap(),
            seconds: 0,
            remote_host: "198.51.100.2".into(),
            bytes: 1048576,
            path: "pub/my file.bin".into(),
            transfer_type: TransferType::Image,
            kind: TransferKind::Download,
            user: "anonymous".into(),
            complete: true,
        }
    }

    #[test]
    fn formats_a_download_like_vsftpd() {
        assert_eq!(
            format_record(&record()),
            "Wed Nov  4 06:14:06 2026 1 198.51.100.2 1048576 pub/my_file.bin b _ o a anonymous ftp 0 * c"
        );
    }

    #[test]
    fn formats_an_incomplete_ascii_upload_by_a_real_user() {
        let r = Record {
            transfer_type: TransferType::Ascii,
            kind: TransferKind::Upload,
            user: "alice".into(),
            complete: false,
            seconds: 12,
            path: String::new(),
            ..record()
        };
        assert_eq!(
            format_record(&r),
            "Wed Nov  4 06:14:06 2026 12 198.51.100.2 1048576 - a _ i r alice ftp 0 * i"
        );
    }

    #[test]
    fn every_record_has_the_fourteen_xferlog_fields_after_the_date() {
        let r = Record {
            path: "a\tb\nc d".into(),
            user: "x y".into(),
            ..record()
        };
        let line = format_record(&r);
        assert_eq!(line.split(' ').filter(|f| !f.is_empty()).count(), 5 + 13);
    }
}
