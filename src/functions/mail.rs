//! Outgoing mail. With `SMTP_URL` mail goes through lettre's async SMTP transport; without it,
//! development servers write each mail (reset link included) to the log so the flow can be tried
//! locally, and production servers drop it with a warning (reset tokens must not reach logs).
//! Tests use the in-memory outbox.

use std::sync::{Arc, Mutex};

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, ConfigError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Clone)]
pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    Log {
        production: bool,
    },
    /// Keeps every mail in memory (tests).
    Memory(Arc<Mutex<Vec<Mail>>>),
}

impl Mailer {
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let Some(url) = &config.smtp_url else {
            return Ok(Mailer::Log {
                production: config.is_production(),
            });
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| ConfigError(format!("SMTP_URL: {e}")))?
            .build();
        let sender = config
            .smtp_sender
            .clone()
            .unwrap_or_else(|| format!("alterego <noreply@{}>", config.instance_domain));
        let from = sender
            .parse()
            .map_err(|e| ConfigError(format!("SMTP_SENDER `{sender}`: {e}")))?;
        Ok(Mailer::Smtp { transport, from })
    }

    pub fn memory() -> Self {
        Mailer::Memory(Arc::default())
    }

    /// The mails kept by the in-memory outbox.
    pub fn sent(&self) -> Vec<Mail> {
        match self {
            Mailer::Memory(m) => m.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            _ => Vec::new(),
        }
    }

    /// Sends one mail. Failures are logged; callers never wait on or report them.
    pub async fn send(&self, mail: Mail) {
        match self {
            Mailer::Smtp { transport, from } => {
                let to: Mailbox = match mail.to.parse() {
                    Ok(to) => to,
                    Err(e) => return tracing::warn!(error = %e, "mail not sent: bad recipient"),
                };
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(mail.subject)
                    .body(mail.body);
                match message {
                    Ok(m) => {
                        if let Err(e) = transport.send(m).await {
                            tracing::warn!(error = %e, "mail not sent: SMTP failure");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "mail not sent: cannot build message"),
                }
            }
            Mailer::Log { production: false } => {
                tracing::info!(to = %mail.to, subject = %mail.subject, body = %mail.body, "mail (SMTP_URL unset, logged instead)");
            }
            Mailer::Log { production: true } => {
                tracing::warn!(subject = %mail.subject, "mail dropped: SMTP_URL is not configured");
            }
            Mailer::Memory(m) => m.lock().unwrap_or_else(|p| p.into_inner()).push(mail),
        }
    }
}
