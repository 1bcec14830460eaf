pub mod config;
pub mod runfolder;
pub mod optim;
pub mod plot;
pub mod interrupt;
pub mod trainer;
