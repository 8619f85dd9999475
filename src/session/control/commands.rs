//! Client commands: parsing, the unknown-verb policy, the command and login rules,
//! and dispatch by verb.

use super::*;
use crate::codec::LineError;
use crate::rules::UnknownCommands;

impl Control {
    pub(super) fn on_command(&mut self, line: Line) {
        if self.client_auth_waits() {
            return self.close_with(Say::ClearAfterAuth, CloseReason::TlsFailed);
        }
        let cmd = match codec::parse_line(&line) {
            Ok(cmd) => cmd,
            Err(LineError::Malformed(why)) => {
                self.out.push(Action::Command("other".to_string()));
                return self.refuse(Say::Malformed(why));
            }
            Err(LineError::Syntax(e)) => {
                self.out.push(Action::Command(e.verb.to_string()));
                return self.refuse(Say::Syntax);
            }
        };
        self.out.push(Action::Command(cmd.verb().to_string()));
        if let Some(say) = self.unknown_verb(&cmd).or_else(|| self.rule_refusal(&cmd)) {
            return self.refuse(say);
        }
        self.dispatch(line, cmd);
    }

    /// A verb ftpgate does not know is counted, and refused unless
    /// `set unknown-commands pass`.
    pub(super) fn unknown_verb(&mut self, cmd: &Command) -> Option<Say> {
        if codec::is_known_verb(cmd.verb()) {
            return None;
        }
        let passed = self.rules.settings.unknown_commands == UnknownCommands::Pass;
        let class = codec::verb_class(cmd.verb());
        self.out.push(Action::UnknownVerb { class, passed });
        (!passed).then_some(Say::UnknownCommand)
    }

    /// The login rules for `USER`, the command rules for everything else.
    pub(super) fn rule_refusal(&mut self, cmd: &Command) -> Option<Say> {
        let parties = self.parties();
        if let Command::User(name) = cmd {
            let name = String::from_utf8_lossy(name).into_owned();
            let decision = self.rules.login_decision(&parties, &name);
            return self.blocked_reply(decision, || name, Scope::Login);
        }
        let site = match cmd {
            Command::Other {
                verb,
                arg: Some(arg),
            } if verb == "SITE" => arg
                .split(|b| *b == b' ')
                .next()
                .map(|sub| String::from_utf8_lossy(sub).into_owned()),
            _ => None,
        };
        let decision = self
            .rules
            .command_decision(&parties, cmd.verb(), site.as_deref());
        let what = || match &site {
            Some(sub) => format!("SITE {}", sub.to_ascii_uppercase()),
            None => cmd.verb().to_string(),
        };
        self.blocked_reply(decision, what, Scope::Command)
    }

    pub(super) fn dispatch(&mut self, line: Line, cmd: Command) {
        match cmd {
            Command::Port(a) => self.on_active(ActiveForm::Port, SocketAddr::V4(a)),
            Command::Eprt(a) => self.on_active(ActiveForm::Eprt, a),
            Command::Lprt(_) | Command::Lpsv => self.refuse(Say::LprtLpsv),
            // Single-port passive (pure-ftpd) answers `227 port`, which no rewrite
            // of ftpgate's covers.
            Command::Other { verb, .. } if verb == "SPSV" => self.refuse(Say::Spsv),
            Command::Pasv => self.on_passive(line, PassiveForm::Pasv, None),
            Command::Epsv(EpsvArg::Any) => self.on_passive(line, PassiveForm::Epsv, None),
            Command::Epsv(EpsvArg::Family(f)) => {
                let own = addr::family_number(self.params.client_side.ip());
                if f == own {
                    self.on_passive(line, PassiveForm::Epsv, Some(f));
                } else {
                    self.refuse(Say::EpsvFamily(own));
                }
            }
            Command::Epsv(EpsvArg::All) => self.on_epsv_all(line),
            Command::Auth(mechanism) => self.on_auth(line, &mechanism),
            cmd if self.needs_tls_first(&cmd) => self.refuse(Say::TlsRequired),
            Command::Other { verb, arg } if matches!(verb.as_str(), "PBSZ" | "PROT" | "CCC") => {
                self.on_protection(&verb, arg.as_deref())
            }
            Command::Other { verb, .. } if verb == "FEAT" => self.forward(line, Pending::Feat),
            Command::User(name) => {
                let name: String = String::from_utf8_lossy(&name)
                    .chars()
                    .take(MAX_USER)
                    .collect();
                self.out.push(Action::User(name.clone()));
                self.user = Some(name);
                self.forward(line, Pending::Other);
            }
            Command::Abor => self.on_abort(line),
            Command::Other { verb, arg } if verb == "TYPE" => {
                if let Some(t) = arg.as_ref().and_then(|a| a.first()) {
                    self.transfer_type = match t.to_ascii_uppercase() {
                        b'I' | b'L' => TransferType::Image,
                        _ => TransferType::Ascii,
                    };
                }
                self.forward(line, Pending::Other);
            }
            cmd @ Command::Other { .. } => match self.transfer_of(&cmd) {
                Some(transfer) => self.on_transfer(line, transfer),
                None => self.forward(line, Pending::Other),
            },
        }
    }

    pub(super) fn on_epsv_all(&mut self, line: Line) {
        self.epsv_all = true;
        if self.params.server_mode == Some(DataMode::Active) {
            // The server leg uses PORT/EPRT, which EPSV ALL would forbid it; the
            // promise binds the client only, so it is kept here.
            self.reply_locally(Say::EpsvAllOk.encode());
        } else {
            self.forward(line, Pending::Other);
        }
    }

    /// What a transfer verb asks for, for the session table and the transfer log.
    pub(super) fn transfer_of(&self, cmd: &Command) -> Option<Transfer> {
        let kind = cmd.transfer_kind()?;
        let path = match cmd {
            Command::Other { arg: Some(arg), .. } => {
                // Cut, not rebuilt a character at a time.
                let text = String::from_utf8_lossy(arg);
                match text.char_indices().nth(MAX_PATH) {
                    Some((end, _)) => text.get(..end).unwrap_or_default().to_owned(),
                    None => text.into_owned(),
                }
            }
            _ => String::new(),
        };
        Some(Transfer {
            kind,
            path,
            transfer_type: self.transfer_type,
            user: self.user.clone(),
        })
    }

    pub(super) fn on_transfer(&mut self, line: Line, transfer: Transfer) {
        let unused = self
            .data
            .as_ref()
            .filter(|d| d.transfer.is_none())
            .map(|d| (d.id, d.mode, d.port));
        if let Some((id, mode, port)) = unused {
            let request = DataRequest {
                mode,
                family: Family::of(self.params.client.ip()),
                port,
                direction: Some(transfer.kind),
            };
            let decision = self.rules.data_decision(&self.parties(), &request);
            let what = || {
                format!(
                    "data {} {} port {port}",
                    mode.as_str(),
                    transfer.kind.as_str()
                )
            };
            if let Some(say) = self.blocked_reply(decision, what, Scope::Data) {
                self.cancel_if_current(id);
                return self.refuse(say);
            }
        }
        self.open_deferred();
        let id = match self.data.as_mut() {
            Some(data) if data.transfer.is_none() => {
                data.transfer = Some(transfer.kind);
                self.out.push(Action::Transfer {
                    id: data.id,
                    transfer,
                });
                Some(data.id)
            }
            _ => None,
        };
        self.forward(line, Pending::Transfer { id });
    }

    pub(super) fn on_abort(&mut self, line: Line) {
        if let Some(data) = self.data.take() {
            self.cancel(data.id);
        }
        self.forward(line, Pending::Other);
    }
}
