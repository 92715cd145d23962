//! One module per subcommand.

pub mod add;
pub mod audit;
pub mod backup;
pub mod card;
pub mod conflicts;
pub mod contacts;
pub mod correct;
pub mod damaged;
pub mod devices;
pub mod export;
pub mod held;
pub mod history;
pub mod import;
pub mod imports;
pub mod init;
pub mod medicines;
pub mod node;
pub mod patients;
pub mod peers;
pub mod relays;
pub mod resolve;
pub mod share;
pub mod show;
pub mod status;
pub mod sync;
