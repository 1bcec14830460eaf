pub mod batchnorm;
pub mod config;
pub mod interrupt;
pub mod optim;
pub mod plot;
pub mod regularise;
pub mod runfolder;
pub mod trainer;
