//! `switchboard contacts`: one person across connections and vendors (list, get, merge,
//! split, erase).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use switchboard_proto::v1;

use crate::{ServerArg, answer, status_name, time_text};

#[derive(Debug, Subcommand)]
pub(crate) enum ContactsCommand {
    /// List contacts by id, or find them by e-mail, phone, visitor id or name (the filters
    /// given all hold).
    List {
        #[command(flatten)]
        server: ServerArg,
        /// Contacts with this e-mail.
        #[arg(long)]
        email: Option<String>,
        /// Contacts with this phone, in international form (+44...).
        #[arg(long)]
        phone: Option<String>,
        /// Contacts with this visitor: CONNECTION/VISITOR_ID.
        #[arg(long = "visitor-id")]
        visitor: Option<String>,
        /// Contacts seen with a name holding every word of this.
        #[arg(long)]
        name: Option<String>,
        /// How many per page (1-1000).
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        /// Follow next_page_token until the end.
        #[arg(long)]
        all: bool,
    },
    /// Show a contact with its conversations and tickets, newest first.
    Get {
        #[command(flatten)]
        server: ServerArg,
        /// The contact id, e.g. c42 (`switchboard contacts list` shows them).
        id: String,
        /// At most this many conversations and this many tickets (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Record that two contacts are one person: FROM's identities, conversations and tickets
    /// move to INTO (kept as an event in the log).
    Merge {
        #[command(flatten)]
        server: ServerArg,
        /// The contact that remains.
        into: String,
        /// The contact merged into it.
        from: String,
    },
    /// Record that some identities of a contact are another person: they leave for a new
    /// contact with the conversations and tickets they identify (kept as an event in the log).
    Split {
        #[command(flatten)]
        server: ServerArg,
        /// The contact to split.
        id: String,
        /// The identity keys that leave, as `contacts get` shows them: email:ADDRESS,
        /// phone:+E164, visitor:CONNECTION/VISITOR_ID.
        #[arg(required = true)]
        identities: Vec<String>,
    },
    /// Erase a contact's personal data (names, e-mails, phones, message text, raw bodies)
    /// from the store, the finder's index and the event log, for good. Asks you to type the
    /// contact id unless --yes.
    Erase {
        #[command(flatten)]
        server: ServerArg,
        /// The contact to erase.
        id: String,
        /// Do not ask for confirmation (needed when not run from a terminal).
        #[arg(long)]
        yes: bool,
    },
}

pub(crate) async fn run(command: ContactsCommand) -> Result<()> {
    match command {
        ContactsCommand::List {
            server,
            email,
            phone,
            visitor,
            name,
            page_size,
            all,
        } => {
            let request = v1::ListContactsRequest {
                email: email.unwrap_or_default(),
                phone: phone.unwrap_or_default(),
                visitor_id: visitor.unwrap_or_default(),
                name: name.unwrap_or_default(),
                page_size,
                page_token: String::new(),
            };
            list(server, request, all).await
        }
        ContactsCommand::Get { server, id, limit } => get(server, id, limit).await,
        ContactsCommand::Merge { server, into, from } => {
            let mut client = server.connect().await?;
            let merged = client
                .merge_contacts(v1::MergeContactsRequest {
                    into: into.clone(),
                    from: from.clone(),
                })
                .await
                .map_err(answer)
                .with_context(|| format!("cannot merge {from} into {into}"))?
                .into_inner();
            println!("merged {from} into {into}");
            print_view(&merged);
            Ok(())
        }
        ContactsCommand::Split {
            server,
            id,
            identities,
        } => {
            let mut client = server.connect().await?;
            let split = client
                .split_contact(v1::SplitContactRequest {
                    contact_id: id.clone(),
                    identities,
                })
                .await
                .map_err(answer)
                .with_context(|| format!("cannot split {id}"))?
                .into_inner();
            let new_id = split
                .split_off
                .as_ref()
                .and_then(|v| v.contact.as_ref())
                .map_or("?", |c| c.id.as_str());
            println!("split {new_id} off {id}");
            for view in [split.contact, split.split_off].iter().flatten() {
                println!();
                print_view(view);
            }
            Ok(())
        }
        ContactsCommand::Erase { server, id, yes } => erase(server, id, yes).await,
    }
}

async fn list(server: ServerArg, mut request: v1::ListContactsRequest, all: bool) -> Result<()> {
    let mut client = server.connect().await?;
    let mut shown = 0usize;
    loop {
        let page = client
            .list_contacts(request.clone())
            .await
            .map_err(answer)
            .context("cannot list contacts")?
            .into_inner();
        for contact in &page.contacts {
            shown += 1;
            println!("{}", summary(contact));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        if !all {
            println!("(more: use --all)");
            break;
        }
        request.page_token = page.next_page_token;
    }
    if shown == 0 {
        println!("no contacts");
    }
    Ok(())
}

/// One line: the id, then what identifies the person.
fn summary(c: &v1::Contact) -> String {
    let mut parts = vec![c.id.clone()];
    if let Some(into) = &c.merged_into {
        parts.push(format!("(merged into {into})"));
    }
    if c.erased_at.is_some() {
        parts.push(format!("(erased {})", time_text(c.erased_at.as_ref())));
    }
    if !c.names.is_empty() {
        parts.push(format!("name={}", c.names.join("|")));
    }
    for (label, values) in [
        ("email", &c.emails),
        ("phone", &c.phones),
        ("visitor", &c.visitor_ids),
    ] {
        if !values.is_empty() {
            parts.push(format!("{label}={}", values.join(",")));
        }
    }
    if c.last_seen.is_some() {
        parts.push(format!("last_seen={}", time_text(c.last_seen.as_ref())));
    }
    parts.join("  ")
}

async fn get(server: ServerArg, id: String, limit: u32) -> Result<()> {
    let mut client = server.connect().await?;
    let view = client
        .get_contact(v1::GetContactRequest {
            id: id.clone(),
            limit,
        })
        .await
        .map_err(answer)
        .with_context(|| format!("cannot get contact {id}"))?
        .into_inner();
    print_view(&view);
    Ok(())
}

fn print_view(view: &v1::ContactView) {
    let Some(contact) = &view.contact else {
        return;
    };
    println!("{}", summary(contact));
    for identity in &contact.identities {
        println!("  identity  {identity}");
    }
    if !contact.separated.is_empty() {
        println!("  never linked with {}", contact.separated.join(", "));
    }
    println!("  conversations ({}):", view.conversations.len());
    for c in &view.conversations {
        println!(
            "    {}  {}  {}  started {}  {} msgs",
            c.id,
            c.vendor,
            status_name(c.status()),
            time_text(c.started_at.as_ref()),
            c.message_count
        );
    }
    println!("  tickets ({}):", view.tickets.len());
    for t in &view.tickets {
        println!(
            "    {}  {}  updated {}  {}",
            t.id,
            t.status()
                .as_str_name()
                .trim_start_matches("TICKET_STATUS_")
                .to_ascii_lowercase(),
            time_text(t.updated_at.as_ref()),
            t.subject
        );
    }
    if view.indexed_through > 0 {
        println!(
            "  (the index has read the log through sequence {})",
            view.indexed_through
        );
    }
}

/// Asks for the contact id on the terminal: erasure cannot be undone.
fn confirm(id: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "not erasing {id}: erasure cannot be undone and there is no terminal to confirm it \
             on; pass --yes to erase without asking"
        );
    }
    eprint!(
        "This erases the personal data of contact {id} (names, e-mails, phones, message text, \
         raw bodies) for good.\nType the contact id to confirm: "
    );
    std::io::stderr().flush().ok();
    let mut typed = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut typed)
        .context("cannot read the confirmation")?;
    if typed.trim() != id {
        bail!("not erasing {id}: the confirmation did not match");
    }
    Ok(())
}

async fn erase(server: ServerArg, id: String, yes: bool) -> Result<()> {
    if id.trim().is_empty() {
        bail!("give the contact id to erase, e.g. c42");
    }
    if !yes {
        confirm(&id)?;
    }
    let mut client = server.connect().await?;
    let report = client
        .erase_contact(v1::EraseContactRequest {
            contact_id: id.clone(),
        })
        .await
        .map_err(answer)
        .with_context(|| format!("cannot erase {id}"))?
        .into_inner();
    println!(
        "erased {}: {} conversations, {} tickets, {} log events (recorded as event {})",
        report.contact_id, report.conversations, report.tickets, report.events, report.sequence
    );
    Ok(())
}
