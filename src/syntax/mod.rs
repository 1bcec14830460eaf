//! Text to AST: the pest grammar in `grammar/net.pest` and the spanned syntax tree.
pub mod ast;
pub mod parser;

pub use parser::parse;
