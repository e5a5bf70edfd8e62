//! Self-supervised backbone pretraining beyond the study (docs/pretraining.md): the shared
//! config keys ([`config`]), the shared run loop ([`runner`]), augmented views ([`views`]) and
//! the methods built on them.

pub mod config;
pub mod mlp;
pub mod runner;
pub mod simsiam;
pub mod views;

pub use config::{MethodKeys, SslCommon, SslConfig, COMMON_KEYS};
pub use runner::{run_ssl, store_entries, BatchBuilder, SslMethod};
pub use simsiam::{pretrain_simsiam, SimSiamConfig, SimSiamKeys};
pub use views::ViewAugment;
