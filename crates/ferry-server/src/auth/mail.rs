//! Sending sign-in mail. `log` prints each mail (the default, so a newcomer
//! can sign in from the terminal); `dir` writes each as a file (for tests
//! and for tools that pick mail up from a folder); SMTP sends it, with lettre.

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
    /// Sent through an SMTP server.
    Smtp {
        /// `smtps://user:pass@host:465` (TLS), `smtp://user:pass@host:587?tls=required`
        /// (STARTTLS) or `smtp://host:25` (plain, for a local relay).
        url: String,
        /// The `From` address.
        from: String,
    },
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
            crate::ids::hex(&bytes)
        );
        // Written under a temporary name and renamed, so a reader never sees
        // half a mail.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        tokio::fs::write(&tmp, mail.to_text()).await?;
        tokio::fs::rename(&tmp, self.dir.join(name)).await
    }
}

/// Sends mail through an SMTP server.
pub struct SmtpMailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A mailer for the server at `url`, sending from `from`.
    pub fn new(url: &str, from: &str) -> std::io::Result<Self> {
        let invalid = |what: &str, e: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
        };
        let transport = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
            .map_err(|e| invalid("smtp_url", &e))?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        let from = from.parse().map_err(|e| invalid("mail_from", &e))?;
        Ok(SmtpMailer { transport, from })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &Mail) -> std::io::Result<()> {
        use lettre::AsyncTransport;
        let to = mail
            .to
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// The mailer `config` names.
pub fn mailer(config: &MailerConfig) -> std::io::Result<std::sync::Arc<dyn Mailer>> {
    Ok(match config {
        MailerConfig::Log => std::sync::Arc::new(LogMailer),
        MailerConfig::Dir(dir) => std::sync::Arc::new(DirMailer::new(dir.clone())?),
        MailerConfig::Smtp { url, from } => std::sync::Arc::new(SmtpMailer::new(url, from)?),
    })
}
