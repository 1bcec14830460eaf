//! `dualnet compile SPEC --emit primal|dual|dot [-o FILE]`: print the checked primal graph, the emitted dual graph,
//! or Graphviz DOT of both.

use std::path::PathBuf;

use crate::emit;
use crate::error::Result;
use crate::ir::dual;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub spec: PathBuf,
    #[arg(long, value_enum, default_value = "primal")]
    pub emit: Emit,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Emit {
    Primal,
    Dual,
    Dot,
}

pub fn run(args: &Args) -> Result<()> {
    let g = super::load_graph(&args.spec)?;
    let text = match args.emit {
        Emit::Primal => emit::primal(&g),
        Emit::Dual => emit::dual(&g, &dual::build(&g)),
        Emit::Dot => emit::dot(&g, &dual::build(&g)),
    };
    match &args.out {
        Some(p) => crate::weights::write_atomic(p, text.as_bytes()),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
