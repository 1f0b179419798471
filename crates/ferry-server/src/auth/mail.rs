//! Sending sign-in mail. `log` prints each mail (the default, so a newcomer
//! can sign in from the terminal); `dir` writes each as a file (for tests
//! and for tools that pick mail up from a folder).

use std::path::PathBuf;

use async_trait::async_trait;

/// One mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The recipient.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

impl Mail {
    /// The mail as RFC 5322 text.
    pub fn to_text(&self) -> String {
        format!(
            "To: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}",
            self.to, self.subject, self.body
        )
    }
}

/// Where mail goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MailerConfig {
    /// Printed on standard output.
    #[default]
    Log,
    /// Written as one file per mail in this directory.
    Dir(PathBuf),
}

/// Sends mail.
#[async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `mail`.
    async fn send(&self, mail: &Mail) -> std::io::Result<()>;
}

/// Prints each mail on standard output.
#[derive(Debug)]
pub struct LogMailer;

#[async_trait]
impl Mailer for LogMailer {
    async fn send(&self, mail: &Mail) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "----- mail (the log mailer prints instead of sending) -----"
        )?;
        writeln!(
            out,
            "To: {}\nSubject: {}\n\n{}",
            mail.to, mail.subject, mail.body
        )?;
        writeln!(
            out,
            "-----------------------------------------------------------"
        )?;
        out.flush()
    }
}

/// Writes each mail as `{millis}-{random}.eml` in a directory.
#[derive(Debug)]
pub struct DirMailer {
    dir: PathBuf,
}

impl DirMailer {
    /// Mail goes to `dir`, created if missing.
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(DirMailer { dir })
    }
}

#[async_trait]
impl Mailer for DirMailer {
    async fn send(&self, mail: &Mail) -> std::io::Result<()> {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        let name = format!(
            "{:013}-{}.eml",
            crate::clock::wall_ms(),
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        // Written under a temporary name and renamed, so a reader never sees
        // half a mail.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        tokio::fs::write(&tmp, mail.to_text()).await?;
        tokio::fs::rename(&tmp, self.dir.join(name)).await
    }
}

/// The mailer `config` names.
pub fn mailer(config: &MailerConfig) -> std::io::Result<std::sync::Arc<dyn Mailer>> {
    Ok(match config {
        MailerConfig::Log => std::sync::Arc::new(LogMailer),
        MailerConfig::Dir(dir) => std::sync::Arc::new(DirMailer::new(dir.clone())?),
    })
}
