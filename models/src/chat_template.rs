//! Hugging Face chat templates (Jinja) rendered with minijinja, set up the
//! way transformers' `apply_chat_template` sets up jinja2: `trim_blocks`
//! and `lstrip_blocks` on, trailing newline dropped, Python string/dict
//! methods (`.strip()`, `.startswith()`, `.items()`...), `raise_exception`,
//! a `tojson` that behaves like `json.dumps` (no HTML escaping,
//! `ensure_ascii`/`indent`/`separators`/`sort_keys`), and `strftime_now`
//! (UTC: there is no local time zone here).
//!
//! Known differences from jinja2: Python's `%` string formatting is not
//! supported, and object keys keep the order they arrive in; note that a
//! `serde_json::Value` parsed without serde_json's `preserve_order`
//! feature has already sorted them, which changes what `tojson` prints
//! for tool schemas compared with Python.

use std::fmt::Write as _;
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

/// The name the template is registered under.
const TEMPLATE_NAME: &str = "chat_template";
/// Marks errors raised by the template's own `raise_exception`.
const RAISE_PREFIX: &str = "raise_exception: ";

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template source is not valid Jinja (for minijinja).
    #[error("compiling chat template: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`.
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    /// Rendering failed for another reason.
    #[error("rendering chat template: {0}")]
    Render(String),
}

/// A compiled chat template plus the special-token strings it may use.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    /// Compiles a Hugging Face chat template; `bos_token`/`eos_token` are
    /// exposed to it as variables of those names when given.
    pub fn new(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| ChatTemplateError::Syntax(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson_filter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        let source = rewrite_generation_tags(source);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| ChatTemplateError::Syntax(error_chain(&e)))?;
        Ok(Self {
            env,
            bos_token: bos_token.map(str::to_string),
            eos_token: eos_token.map(str::to_string),
        })
    }

    /// Renders a conversation (`{"role", "content", ...}` objects), with the
    /// assistant-turn opener when `add_generation_prompt`, and tool schemas
    /// as `tools` (`none` when absent, as transformers passes them).
    pub fn render(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: Option<&[serde_json::Value]>,
    ) -> Result<String, ChatTemplateError> {
        self.render_with(messages, add_generation_prompt, tools, None)
    }

    /// Like [`ChatTemplate::render`], with extra template variables (e.g.
    /// `{"enable_thinking": false}`) from a JSON object.
    pub fn render_with(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: Option<&[serde_json::Value]>,
        extra: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<String, ChatTemplateError> {
        let mut ctx: Vec<(Arc<str>, Value)> = Vec::new();
        if let Some(extra) = extra {
            for (k, v) in extra {
                ctx.push((Arc::from(k.as_str()), json_to_value(v)));
            }
        }
        let mut set = |key: &str, value: Value| {
            ctx.retain(|(k, _)| &**k != key);
            ctx.push((Arc::from(key), value));
        };
        set(
            "messages",
            Value::from(messages.iter().map(json_to_value).collect::<Vec<_>>()),
        );
        set(
            "tools",
            match tools {
                Some(t) => Value::from(t.iter().map(json_to_value).collect::<Vec<_>>()),
                None => Value::from(()),
            },
        );
        set("documents", Value::from(()));
        set("add_generation_prompt", Value::from(add_generation_prompt));
        if let Some(b) = &self.bos_token {
            set("bos_token", Value::from(b.as_str()));
        }
        if let Some(e) = &self.eos_token {
            set("eos_token", Value::from(e.as_str()));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatTemplateError::Render(error_chain(&e)))?;
        template
            .render(Value::from_object(OrderedMap(ctx)))
            .map_err(|e| match raised_message(&e) {
                Some(msg) => ChatTemplateError::Raised(msg),
                None => ChatTemplateError::Render(error_chain(&e)),
            })
    }

    /// Renders `(role, content)` pairs.
    pub fn render_simple(
        &self,
        messages: &[(&str, &str)],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
            .collect();
        self.render(&messages, add_generation_prompt, None)
    }
}

/// Picks the chat template from a `tokenizer_config.json`'s
/// `chat_template` value (or the whole config object): a string, or a list
/// of `{name, template}` where `default` wins (else the first).
pub fn chat_template_from_config(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => chat_template_by_name(value, "default").or_else(|| {
            list.iter()
                .find_map(|e| e.get("template").and_then(|t| t.as_str()))
                .map(str::to_string)
        }),
        serde_json::Value::Object(o) => o.get("chat_template").and_then(chat_template_from_config),
        _ => None,
    }
}

/// Picks a named template (e.g. `tool_use`) from a list-valued
/// `chat_template` (or the whole config object).
pub fn chat_template_by_name(value: &serde_json::Value, name: &str) -> Option<String> {
    match value {
        serde_json::Value::Array(list) => list
            .iter()
            .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(name))
            .and_then(|e| e.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        serde_json::Value::Object(o) => o
            .get("chat_template")
            .and_then(|v| chat_template_by_name(v, name)),
        _ => None,
    }
}

/// A map that keeps insertion order (minijinja's own maps sort keys).
#[derive(Debug)]
struct OrderedMap(Vec<(Arc<str>, Value)>);

impl Object for OrderedMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        self.0
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys: Vec<Value> = self.0.iter().map(|(k, _)| Value::from(k.clone())).collect();
        Enumerator::Iter(Box::new(keys.into_iter()))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

/// Converts JSON to a template value, keeping object key order.
fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::from(a.iter().map(json_to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(o) => Value::from_object(OrderedMap(
            o.iter()
                .map(|(k, v)| (Arc::from(k.as_str()), json_to_value(v)))
                .collect(),
        )),
    }
}

/// Replaces transformers' `{% generation %}` / `{% endgeneration %}` tags
/// (assistant-mask markers, no output of their own) with an `if true`
/// block, which keeps the tags' whitespace behaviour.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(end_rel) = rest[start + 2..].find("%}") else {
            break;
        };
        let end = start + 2 + end_rel;
        let inner = &rest[start + 2..end];
        let lead = inner.len() - inner.trim_start_matches(['-', '+']).len();
        let trail = inner.len() - inner.trim_end_matches(['-', '+']).len();
        let core = if lead + trail <= inner.len() {
            inner[lead..inner.len() - trail].trim()
        } else {
            ""
        };
        let replacement = match core {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        out.push_str(&rest[..start + 2]);
        match replacement {
            Some(r) => {
                out.push_str(&inner[..lead]);
                out.push(' ');
                out.push_str(r);
                out.push(' ');
                out.push_str(&inner[inner.len() - trail..]);
            }
            None => out.push_str(inner),
        }
        out.push_str("%}");
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The error and its sources on one line.
fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        let _ = write!(s, ": {inner}");
        source = inner.source();
    }
    s
}

/// The message of a `raise_exception` call, if this error is one.
fn raised_message(e: &Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(mj) = err.downcast_ref::<Error>() {
            if let Some(msg) = mj.detail().and_then(|d| d.strip_prefix(RAISE_PREFIX)) {
                return Some(msg.to_string());
            }
        }
        cur = err.source();
    }
    None
}

/// `raise_exception(message)`: fails the render with that message.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISE_PREFIX}{message}"),
    ))
}

/// `strftime_now(format)`: the current UTC time, formatted like Python's strftime.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime(&format, i64::try_from(secs).unwrap_or(0))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a (year, month 1-12, day) date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A subset of C strftime over a UTC Unix time: `%Y %y %m %d %e %H %I %M
/// %S %p %b %B %h %a %A %j %w %u %F %T %D %R %n %t %%`, with glibc's `-`
/// flag (no padding); anything else is copied through.
fn strftime(format: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (
        secs_of_day / 3600,
        (secs_of_day % 3600) / 60,
        secs_of_day % 60,
    );
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[(month as usize).saturating_sub(1) % 12];
    let weekday_name = WEEKDAYS[weekday];
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let no_pad = chars.peek() == Some(&'-');
        if no_pad {
            chars.next();
        }
        let num = |out: &mut String, v: i64, width: usize| {
            if no_pad {
                let _ = write!(out, "{v}");
            } else {
                let _ = write!(out, "{v:0width$}");
            }
        };
        match chars.next() {
            Some('Y') => {
                let _ = write!(out, "{year}");
            }
            Some('y') => num(&mut out, year.rem_euclid(100), 2),
            Some('m') => num(&mut out, i64::from(month), 2),
            Some('d') => num(&mut out, i64::from(day), 2),
            Some('e') => {
                if no_pad {
                    let _ = write!(out, "{day}");
                } else {
                    let _ = write!(out, "{day:>2}");
                }
            }
            Some('H') => num(&mut out, hour, 2),
            Some('I') => num(&mut out, hour12, 2),
            Some('M') => num(&mut out, minute, 2),
            Some('S') => num(&mut out, second, 2),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('b') | Some('h') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&weekday_name[..3]),
            Some('A') => out.push_str(weekday_name),
            Some('j') => num(&mut out, day_of_year, 3),
            Some('w') => {
                let _ = write!(out, "{weekday}");
            }
            Some('u') => {
                let _ = write!(out, "{}", if weekday == 0 { 7 } else { weekday });
            }
            Some('F') => {
                let _ = write!(out, "{year}-{month:02}-{day:02}");
            }
            Some('T') => {
                let _ = write!(out, "{hour:02}:{minute:02}:{second:02}");
            }
            Some('R') => {
                let _ = write!(out, "{hour:02}:{minute:02}");
            }
            Some('D') => {
                let _ = write!(out, "{month:02}/{day:02}/{:02}", year.rem_euclid(100));
            }
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if no_pad {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Options of transformers' `tojson(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`.
struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// The `tojson` filter, as transformers overrides it (`json.dumps`).
fn tojson_filter(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<String, Error> {
    let positional = |i: usize| args.get(i).filter(|v| !v.is_undefined()).cloned();
    let named = |name: &str| -> Result<Option<Value>, Error> {
        let v: Option<Value> = kwargs.get(name)?;
        Ok(v.filter(|v| !v.is_undefined()))
    };
    let ensure_ascii = named("ensure_ascii")?.or_else(|| positional(0));
    let indent = named("indent")?.or_else(|| positional(1));
    let separators = named("separators")?.or_else(|| positional(2));
    let sort_keys = named("sort_keys")?.or_else(|| positional(3));
    kwargs.assert_all_used()?;

    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.kind() {
            ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
            ValueKind::Number => {
                let n = v.as_i64().ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be an integer",
                    )
                })?;
                Some(" ".repeat(usize::try_from(n).unwrap_or(0)))
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ))
            }
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(seps) if !seps.is_none() => {
            let parts: Vec<Value> = seps.try_iter()?.collect();
            match (
                parts.first().and_then(|p| p.as_str()),
                parts.get(1).and_then(|p| p.as_str()),
            ) {
                (Some(a), Some(b)) if parts.len() == 2 => (a.to_string(), b.to_string()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
        _ => (
            if indent.is_some() { "," } else { ", " }.to_string(),
            ": ".to_string(),
        ),
    };
    let opts = JsonOptions {
        ensure_ascii: ensure_ascii.is_some_and(|v| v.is_true()),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.is_some_and(|v| v.is_true()),
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(out)
}

fn write_json(
    out: &mut String,
    value: &Value,
    opts: &JsonOptions,
    level: usize,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                let f = f64::try_from(value.clone())?;
                out.push_str(&python_float_repr(f));
            }
        }
        ValueKind::String => {
            write_json_string(out, value.as_str().unwrap_or_default(), opts.ensure_ascii)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, '[', ']', items.len(), opts, level, |out, i| {
                write_json(out, &items[i], opts, level + 1)
            })?;
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, '{', '}', entries.len(), opts, level, |out, i| {
                let (k, v) = &entries[i];
                write_json_string(out, k, opts.ensure_ascii);
                out.push_str(&opts.key_sep);
                write_json(out, v, opts, level + 1)
            })?;
        }
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: Object of type Undefined is not JSON serializable",
            ))
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of kind {other} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    open: char,
    close: char,
    len: usize,
    opts: &JsonOptions,
    level: usize,
    mut item: impl FnMut(&mut String, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        if i > 0 {
            out.push_str(&opts.item_sep);
        }
        if let Some(ind) = &opts.indent {
            out.push('\n');
            for _ in 0..=level {
                out.push_str(ind);
            }
        }
        item(out, i)?;
    }
    if let Some(ind) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
    out.push(close);
    Ok(())
}

/// A map key as `json.dumps` writes it (non-string keys are stringified).
fn json_key(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_string(),
        ValueKind::None => "null".into(),
        ValueKind::Bool => if key.is_true() { "true" } else { "false" }.into(),
        ValueKind::Number if key.is_integer() => key.to_string(),
        ValueKind::Number => python_float_repr(f64::try_from(key.clone())?),
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: keys must be str, int, float, bool or None, not {other}"),
            ))
        }
    })
}

/// A JSON string literal as Python's `json.dumps` escapes it.
fn write_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` (what `json.dumps` prints for floats).
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Shortest round-trip digits and decimal exponent.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp >= 0 {
            let int_len = exp + 1;
            if n <= int_len {
                format!("{digits}{}.0", "0".repeat((int_len - n) as usize))
            } else {
                format!(
                    "{}.{}",
                    &digits[..int_len as usize],
                    &digits[int_len as usize..]
                )
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let mant = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.5), "0.5");
        assert_eq!(python_float_repr(-2.25), "-2.25");
        assert_eq!(python_float_repr(1e-5), "1e-05");
        assert_eq!(python_float_repr(0.0001), "0.0001");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(123456789012345.6), "123456789012345.6");
        assert_eq!(python_float_repr(1.5e300), "1.5e+300");
        assert_eq!(python_float_repr(0.1), "0.1");
        assert_eq!(python_float_repr(-0.0), "-0.0");
        assert_eq!(python_float_repr(100.0), "100.0");
    }

    #[test]
    fn strftime_formats() {
        // 2024-02-29 13:05:09 UTC, a Thursday
        let t = 1_709_211_909;
        assert_eq!(strftime("%d %b %Y", t), "29 Feb 2024");
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t), "2024-02-29 13:05:09");
        assert_eq!(
            strftime("%A %B %-d %I%p %j %%", t),
            "Thursday February 29 01PM 060 %"
        );
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
    }

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            rewrite_generation_tags("a{% generation %}b{%- endgeneration -%}c{{ x }}"),
            "a{% if true %}b{%- endif -%}c{{ x }}"
        );
    }

    #[test]
    fn tojson_like_python() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ 'é<' | tojson(ensure_ascii=true) }}|{{ messages[0] | tojson(separators=(',', ':'), sort_keys=true) }}",
            None,
            None,
        )
        .unwrap();
        let msg =
            serde_json::json!({"role": "user", "content": "a\"<b>\n", "n": [1, 2.5, null, true]});
        let out = t.render(&[msg], false, None).unwrap();
        assert_eq!(
            out,
            // Python's json.dumps keeps a dict's insertion order unless sort_keys.
            "{\"role\": \"user\", \"content\": \"a\\\"<b>\\n\", \"n\": [1, 2.5, null, true]}|{\n  \"role\": \"user\",\n  \"content\": \"a\\\"<b>\\n\",\n  \"n\": [\n    1,\n    2.5,\n    null,\n    true\n  ]\n}|\"\\u00e9<\"|{\"content\":\"a\\\"<b>\\n\",\"n\":[1,2.5,null,true],\"role\":\"user\"}"
        );
    }

    #[test]
    fn raise_exception_is_reported() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", None, None).unwrap();
        match t.render_simple(&[("user", "hi")], false) {
            Err(ChatTemplateError::Raised(m)) => assert_eq!(m, "no system role"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ChatTemplate>();
        check::<crate::tokenizer::Tokenizer>();
    }

    #[test]
    fn python_style_printing() {
        let t = ChatTemplate::new(
            "{{ messages[0].content }}|{{ true }}|{{ [1, none, 'a'] }}|{% generation %}x{% endgeneration %}",
            None,
            None,
        )
        .unwrap();
        let m = serde_json::json!({"role": "assistant", "content": null});
        assert_eq!(
            t.render(&[m], false, None).unwrap(),
            "None|True|[1, None, 'a']|x"
        );
    }

    #[test]
    fn picks_default_template() {
        let v = serde_json::json!([{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]);
        assert_eq!(chat_template_from_config(&v).as_deref(), Some("D"));
        assert_eq!(chat_template_by_name(&v, "tool_use").as_deref(), Some("T"));
        let cfg = serde_json::json!({"chat_template": "S"});
        assert_eq!(chat_template_from_config(&cfg).as_deref(), Some("S"));
        assert_eq!(chat_template_from_config(&serde_json::json!(3)), None);
    }
}
