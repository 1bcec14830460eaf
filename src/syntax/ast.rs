//! The abstract syntax tree of a `.net` file. Every node carries the byte [`Span`] of the text it came from,
//! so that every later diagnostic can point at the exact source.

use std::fmt;

/// A byte range `[start, end)` in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value with the span it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(node: T, span: Span) -> Self {
        Spanned { node, span }
    }
}

pub type Ident = Spanned<String>;

/// A literal or a name, as written in an argument or a parameter default.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Int(i64),
    Float(f64),
    Name(String),
    List(Vec<Spanned<Literal>>),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x}"),
            Literal::Name(n) => write!(f, "{n}"),
            Literal::List(items) => {
                write!(f, "[")?;
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{}", it.node)?;
                }
                write!(f, "]")
            }
        }
    }
}

/// One argument of a call: `x` (positional) or `out=16` (named).
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Spanned<Literal>,
    pub span: Span,
}

/// The right-hand side of an assignment.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `op(args...)`: an op from the registry or a block instantiation.
    Call { callee: Ident, args: Vec<Arg> },
    /// `a + b + ...`: elementwise sum of earlier nodes (residual and dense skips).
    Sum(Vec<Ident>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Input { name: Ident, shape: Spanned<Literal>, span: Span },
    Output { name: Ident, span: Span },
    Assign { name: Ident, expr: Expr, span: Span },
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Input { span, .. } | Stmt::Output { span, .. } | Stmt::Assign { span, .. } => *span,
        }
    }
}

/// `name = default` in a block's parameter list.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDecl {
    pub name: Ident,
    pub default: Option<Spanned<Literal>>,
}

/// `block name(in1, in2; p1, p2 = 3) { ... output y }`: a parametrised subgraph.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDef {
    pub name: Ident,
    pub inputs: Vec<Ident>,
    pub params: Vec<ParamDecl>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub name: Ident,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// A whole `.net` file: block definitions and networks in source order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub blocks: Vec<BlockDef>,
    pub networks: Vec<Network>,
}
