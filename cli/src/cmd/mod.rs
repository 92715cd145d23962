//! One module per subcommand.

pub mod add;
pub mod conflicts;
pub mod export;
pub mod history;
pub mod import;
pub mod init;
pub mod resolve;
pub mod show;
