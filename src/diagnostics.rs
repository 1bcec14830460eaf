//! Diagnostics as data, rendered apart.
//!
//! A [`Diagnostic`] carries a stable [`Code`], a lowercase message, labelled spans and help. It is rendered with
//! miette (graphical, for people) or as JSON (for tools). Each code has a page under `docs/codes/` and a spec under
//! `specs/err/` that triggers it; `tests/codes.rs` keeps the three in step.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;

use crate::syntax::ast::Span;

/// A source file: its display name and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<Self> {
        Arc::new(SourceFile { name: name.into(), text: text.into() })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|s| s.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

macro_rules! codes {
    ($( $variant:ident = $code:literal, $sev:ident, $title:literal; )*) => {
        /// Every diagnostic kind, with its stable code. Never renumber; add new kinds at the end.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $( $variant, )* }
        impl Code {
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];
            pub fn as_str(self) -> &'static str { match self { $( Code::$variant => $code, )* } }
            pub fn title(self) -> &'static str { match self { $( Code::$variant => $title, )* } }
            pub fn severity(self) -> Severity { match self { $( Code::$variant => Severity::$sev, )* } }
        }
    };
}

codes! {
    Syntax = "E0001", Error, "syntax error";
    UnknownOp = "E0002", Error, "unknown op";
    NoDualRule = "E0003", Error, "op has no dual rule";
    UnknownArgument = "E0004", Error, "unknown argument";
    MissingArgument = "E0005", Error, "missing argument";
    DuplicateArgument = "E0006", Error, "duplicated argument";
    ArgumentType = "E0007", Error, "wrong argument type";
    ArgumentValue = "E0008", Error, "invalid argument value";
    UndefinedNode = "E0009", Error, "undefined node";
    UsedBeforeDefinition = "E0010", Error, "node used before its definition";
    DuplicateNode = "E0011", Error, "duplicate node name";
    SumShapeMismatch = "E0012", Error, "shape mismatch in a sum";
    LinearOnImage = "E0013", Error, "linear applied to an image";
    ConvOnVector = "E0014", Error, "convolution or pooling applied to a vector";
    EmptyOutput = "E0015", Error, "output size is not positive";
    MissingInput = "E0016", Error, "missing input";
    RepeatedInput = "E0017", Error, "repeated input";
    MissingOutput = "E0018", Error, "missing output";
    RepeatedOutput = "E0019", Error, "repeated output";
    OutputNotScores = "E0020", Error, "output is not a vector of class scores";
    BlockRecursion = "E0021", Error, "recursive block";
    UnknownParameter = "E0022", Error, "unknown block parameter";
    Arity = "E0023", Error, "wrong number of inputs";
    InputShape = "E0024", Error, "invalid input shape";
    NoNetwork = "E0025", Error, "no network, or more than one";
    DuplicateBlock = "E0026", Error, "duplicate block or parameter name";
    ShapeMismatch = "E0027", Error, "incompatible input shape";
    WeightMissing = "E0101", Error, "weights file lacks a tensor";
    WeightShape = "E0102", Error, "weight tensor has the wrong shape or dtype";
    WeightExtra = "E0103", Error, "weights file has an extra tensor";
    WeightFile = "E0104", Error, "not a valid safetensors file";
    InputsInvalid = "E0105", Error, "invalid inputs file";
    BadOption = "E0106", Error, "invalid option value";
    DataInvalid = "E0107", Error, "invalid data file";
    DeviceUnavailable = "E0108", Error, "device not available";
    DataMissing = "E0109", Error, "data files not found";
    NonFinite = "E0110", Error, "number is not finite";
    OutsideBox = "E0111", Error, "input lies outside its box";
    TooLarge = "E0112", Error, "work exceeds the available memory";
    OnnxInvalid = "E0120", Error, "not a valid onnx model";
    OnnxUnsupported = "E0121", Error, "onnx node not supported";
    VnnlibSyntax = "E0122", Error, "vnn-lib syntax error";
    VnnlibUnsupported = "E0123", Error, "vnn-lib constraint not supported";
    VnnlibVariable = "E0124", Error, "vnn-lib variable undeclared or out of range";
    Contradiction = "E0900", Error, "internal error: a certificate was contradicted";
    UnusedNode = "W0001", Warning, "unused node";
    ShadowedOp = "W0002", Warning, "block shadows a built-in op";
    LargeModel = "W0003", Warning, "model weights exceed the available memory";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A labelled span. The first label of a diagnostic is its primary location.
#[derive(Debug, Clone)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// One problem found in the user's input.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub labels: Vec<Label>,
    pub help: Option<String>,
    pub source: Option<Arc<SourceFile>>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic { code, message: message.into(), labels: Vec::new(), help: None, source: None }
    }
    pub fn label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push(Label { span, text: text.into() });
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn with_source(mut self, source: Arc<SourceFile>) -> Self {
        self.source = Some(source);
        self
    }
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }
    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }

    /// File, line and column of the primary label.
    pub fn location(&self) -> (Option<String>, Option<usize>, Option<usize>) {
        match (&self.source, self.labels.first()) {
            (Some(src), Some(l)) => {
                let (line, col) = src.line_col(l.span.start);
                (Some(src.name.clone()), Some(line), Some(col))
            }
            (Some(src), None) => (Some(src.name.clone()), None, None),
            _ => (None, None, None),
        }
    }

    pub fn to_json(&self) -> JsonDiagnostic {
        let (file, line, column) = self.location();
        JsonDiagnostic {
            code: self.code.as_str(),
            severity: self.severity(),
            message: self.message.clone(),
            file,
            line,
            column,
            help: self.help.clone(),
        }
    }

    /// Render for a person, with the file name, labelled source and help. `color` picks the theme; snapshots
    /// use no color.
    pub fn render(&self, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let named = self.source.as_ref().map(|s| NamedSource::new(s.name.clone(), s.text.clone()));
        let mut out = String::new();
        if handler.render_report(&mut out, &Report { diag: self, named }).is_err() {
            out = format!("{}[{}]: {}", self.severity(), self.code.as_str(), self.message);
        }
        out
    }
}

/// The JSON form of a diagnostic (`dualnet check --format json`).
#[derive(Debug, Clone, Serialize)]
pub struct JsonDiagnostic {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub help: Option<String>,
}

/// The miette view of a [`Diagnostic`].
struct Report<'a> {
    diag: &'a Diagnostic,
    named: Option<NamedSource<String>>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.diag.message)
    }
}
impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.diag.message)
    }
}
impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diag.code.as_str()))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity() {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diag.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.named.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let src = self.diag.source.as_ref()?;
        let len = src.text.len();
        Some(Box::new(self.diag.labels.iter().enumerate().map(move |(i, l)| {
            let start = l.span.start.min(len);
            let span = SourceSpan::new(start.into(), l.span.len().min(len - start));
            let text = if l.text.is_empty() { None } else { Some(l.text.clone()) };
            if i == 0 {
                LabeledSpan::new_primary_with_span(text, span)
            } else {
                LabeledSpan::new_with_span(text, span)
            }
        })))
    }
}

/// The closest candidate to `name` by edit distance, for did-you-mean help.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&name.to_lowercase(), &c.to_lowercase());
        let dist = strsim::levenshtein(&name.to_lowercase(), &c.to_lowercase());
        if score > 0.8 || dist <= 2.max(name.len() / 3) {
            if best.map(|(_, s)| score > s).unwrap_or(true) {
                best = Some((c, score));
            }
        }
    }
    best.map(|(c, _)| c)
}

/// Whether standard error is a terminal that takes colour (and `NO_COLOR` is unset).
pub fn stderr_color() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
