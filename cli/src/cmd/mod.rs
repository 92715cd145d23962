//! One module per subcommand.

pub mod add;
pub mod backup;
pub mod card;
pub mod conflicts;
pub mod contacts;
pub mod devices;
pub mod export;
pub mod history;
pub mod import;
pub mod init;
pub mod relays;
pub mod resolve;
pub mod share;
pub mod show;
