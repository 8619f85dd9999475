# Sourced by deploy/demo.sh and the bench/ scripts: vsftpd_anon ROOT prints the lines
# of a vsftpd.conf they all share, a foreground vsftpd serving anonymous downloads and
# uploads from ROOT. Each script adds its own listen, port and limit lines.
vsftpd_anon() {
    cat <<CONF
background=NO
anonymous_enable=YES
local_enable=NO
anon_root=$1
write_enable=YES
anon_upload_enable=YES
connect_from_port_20=NO
secure_chroot_dir=/var/run/vsftpd/empty
seccomp_sandbox=NO
CONF
}
