//! A command template: how a password is changed on a device that has neither `chpasswd` nor a
//! `passwd` Cofre knows (a network switch's CLI, an appliance, a database's own command). The admin
//! writes it once per credential (`credential set-rotation --method command --template-file`);
//! every upload is a new version, and each rotation's audit entry names the version and hash it
//! ran with.
//!
//! ```toml
//! # change.tmpl
//! command = "passwd {account}"
//! [[prompt]]
//! expect = "New password:"
//! answer = "{new}"
//! [[prompt]]
//! expect = "Retype new password:"
//! answer = "{new}"
//! ```
//!
//! `command` runs on the target (as the account itself, or the `--as` account); `stdin` (optional)
//! is written to it; each prompt's `answer` is sent when its `expect` text appears in the output;
//! the change succeeded when the command exits 0 and, if `success_output` is set, printed it.
//! Placeholders: `{account}` anywhere, `{old}` and `{new}` (the secrets) only in `stdin` and
//! answers, so a secret never lands on a command line (where `ps` and the target's logs see it).
//! `{{` and `}}` are literal braces.

use crate::FieldError;
use serde::Deserialize;

/// Largest template accepted: a template is a few lines, and its text is kept in every version.
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;
/// At most this many prompts: a change asks a few questions, not a dialogue.
pub const MAX_PROMPTS: usize = 16;

/// One piece of a template's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Account,
    Old,
    New,
}

/// A text with placeholders, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(Vec<Part>);

impl Text {
    pub fn parts(&self) -> &[Part] {
        &self.0
    }

    /// Whether a secret goes into this text.
    pub fn has_secret(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Part::Old | Part::New))
    }

    /// The text with `{account}` filled in; for texts that hold no secret.
    pub fn with_account(&self, account: &str) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Literal(s) => s.as_str(),
                Part::Account => account,
                Part::Old | Part::New => "",
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub expect: String,
    pub answer: Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub command: Text,
    pub stdin: Option<Text>,
    pub prompts: Vec<Prompt>,
    pub success_output: Option<String>,
}

impl Template {
    /// Whether the change needs the old secret (a device that asks for it, like `passwd`).
    pub fn uses_old(&self) -> bool {
        let mut texts = self.prompts.iter().map(|p| &p.answer).chain(&self.stdin);
        texts.any(|t| t.parts().contains(&Part::Old))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    command: String,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default, rename = "prompt")]
    prompts: Vec<RawPrompt>,
    #[serde(default)]
    success_output: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrompt {
    expect: String,
    answer: String,
}

fn field_error(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError::new("template", format!("{field}: {}", reason.into()))
}

/// Splits `text` at its placeholders; `field` names it in an error.
fn text(field: &str, text: &str) -> Result<Text, FieldError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) if name.len() < 32 => name.push(c),
                        _ => return Err(field_error(
                            field,
                            "a `{` opens a placeholder that is not closed (write `{{` for a brace)",
                        )),
                    }
                }
                let part = match name.as_str() {
                    "account" => Part::Account,
                    "old" => Part::Old,
                    "new" => Part::New,
                    other => {
                        return Err(field_error(
                            field,
                            format!(
                                "unknown placeholder {{{other}}}: the placeholders are {{account}}, {{old}} and {{new}}"
                            ),
                        ))
                    }
                };
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(part);
            }
            '}' => {
                return Err(field_error(
                    field,
                    "a `}` closes no placeholder (write `}}` for a brace)",
                ))
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(Text(parts))
}

/// Reads a template, naming the line or the field that is wrong. Every error's field is
/// `template`, so the API names the request field the text came in.
pub fn parse(source: &str) -> Result<Template, FieldError> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(FieldError::new(
            "template",
            format!("longer than {MAX_TEMPLATE_BYTES} bytes"),
        ));
    }
    let raw: RawTemplate = toml::from_str(source).map_err(|e| {
        let line = e
            .span()
            .and_then(|s| source.get(..s.start))
            .map(|before| before.matches('\n').count() + 1);
        let message = e.message().trim_end().to_owned();
        match line {
            Some(l) => FieldError::new("template", format!("line {l}: {message}")),
            None => FieldError::new("template", message),
        }
    })?;
    let command = text("command", raw.command.trim())?;
    if command.parts().is_empty() {
        return Err(field_error("command", "empty: say what runs on the target"));
    }
    if command.has_secret() {
        return Err(field_error(
            "command",
            "{old} and {new} may not appear on the command line, where the target's process list and logs see them: pass them in stdin or a prompt's answer",
        ));
    }
    if raw
        .command
        .chars()
        .chain(raw.success_output.iter().flat_map(|s| s.chars()))
        .any(|c| c.is_control() && c != '\t')
    {
        return Err(field_error(
            "command",
            "control characters (a new line, say) are not allowed",
        ));
    }
    if raw.prompts.len() > MAX_PROMPTS {
        return Err(field_error(
            "prompt",
            format!("at most {MAX_PROMPTS} prompts"),
        ));
    }
    let stdin = raw.stdin.as_deref().map(|s| text("stdin", s)).transpose()?;
    let mut prompts = Vec::with_capacity(raw.prompts.len());
    for (i, p) in raw.prompts.iter().enumerate() {
        let n = i + 1;
        if p.expect.trim().is_empty() {
            return Err(field_error(
                &format!("prompt {n}.expect"),
                "empty: say what text the target prints before it wants the answer",
            ));
        }
        prompts.push(Prompt {
            expect: p.expect.clone(),
            answer: text(&format!("prompt {n}.answer"), &p.answer)?,
        });
    }
    let secret_in = |t: &Text, which: Part| t.parts().contains(&which);
    let gets_new = stdin.as_ref().is_some_and(|t| secret_in(t, Part::New))
        || prompts.iter().any(|p| secret_in(&p.answer, Part::New));
    if !gets_new {
        return Err(field_error(
            "stdin",
            "{new} appears nowhere: the new password must reach the target through stdin or a prompt's answer",
        ));
    }
    Ok(Template {
        command,
        stdin,
        prompts,
        success_output: raw.success_output.filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const PASSWD: &str = r#"
command = "passwd {account}"
[[prompt]]
expect = "New password:"
answer = "{new}"
[[prompt]]
expect = "Retype new password:"
answer = "{new}"
"#;

    #[test]
    fn a_prompting_template_reads() {
        let t = parse(PASSWD).expect("template");
        assert_eq!(t.command.with_account("app"), "passwd app");
        assert_eq!(t.prompts.len(), 2);
        assert_eq!(t.prompts[0].answer.parts(), &[Part::New]);
        assert!(!t.uses_old());
    }

    #[test]
    fn stdin_takes_placeholders_and_literal_braces() {
        let t = parse("command = \"chpasswd\"\nstdin = \"{account}:{new}{{x}}\\n\"\n").expect("t");
        let stdin = t.stdin.expect("stdin");
        assert_eq!(
            stdin.parts(),
            &[
                Part::Account,
                Part::Literal(":".into()),
                Part::New,
                Part::Literal("{x}\n".into())
            ]
        );
    }

    fn error_of(source: &str) -> String {
        parse(source).expect_err("refused").to_string()
    }

    #[test]
    fn a_secret_on_the_command_line_is_refused() {
        let e = error_of("command = \"setpw {account} {new}\"\nstdin = \"{new}\"\n");
        assert!(e.starts_with("template: command: {old} and {new}"), "{e}");
    }

    #[test]
    fn unknown_placeholders_and_fields_are_named() {
        let e = error_of("command = \"x\"\nstdin = \"{nwe}\"\n");
        assert!(e.contains("stdin: unknown placeholder {nwe}"), "{e}");
        let e = error_of("command = \"x\"\nstdin = \"{new}\"\nsucess_output = \"ok\"\n");
        assert!(
            e.starts_with("template: line 3: unknown field `sucess_output`"),
            "{e}"
        );
        let e = error_of("command = \"x\"\n[[prompt]]\nexpect = \"\"\nanswer = \"{new}\"\n");
        assert!(e.contains("prompt 1.expect: empty"), "{e}");
    }

    #[test]
    fn a_template_that_never_sends_the_new_password_is_refused() {
        let e = error_of("command = \"true\"\n");
        assert!(e.contains("{new} appears nowhere"), "{e}");
    }

    #[test]
    fn unclosed_braces_and_control_characters_are_refused() {
        assert!(error_of("command = \"x\"\nstdin = \"{new\"\n").contains("not closed"));
        assert!(error_of("command = \"x}\"\nstdin = \"{new}\"\n").contains("closes no placeholder"));
        assert!(error_of("command = \"a\\nb\"\nstdin = \"{new}\"\n").contains("control characters"));
        let big = format!("command = \"{}\"", "x".repeat(MAX_TEMPLATE_BYTES));
        assert!(error_of(&big).contains("longer than"));
    }

    #[test]
    fn the_old_password_is_noticed() {
        let t = parse(
            "command = \"passwd\"\n[[prompt]]\nexpect = \"Current password:\"\nanswer = \"{old}\"\n[[prompt]]\nexpect = \"New password:\"\nanswer = \"{new}\"\n",
        )
        .expect("t");
        assert!(t.uses_old());
    }
}
