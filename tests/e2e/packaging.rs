//! Packaging, tested as an operator uses it: the service under a service manager
//! (`notify`), the systemd unit (`systemd_unit`), the Debian package (`debian`) and the
//! container image (`image`).

mod debian;
mod image;
mod notify;
mod systemd_unit;
