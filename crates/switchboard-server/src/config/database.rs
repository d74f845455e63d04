//! The PostgreSQL database URL (`database_url`, `--database-url`, `SWITCHBOARD_DATABASE_URL`):
//! with one, the server keeps its data in PostgreSQL (several replicas may share it); without
//! one, in the embedded sled store at `data_dir`. The URL's password never reaches a log or an
//! error: [`DatabaseUrl`]'s `Debug` and `Display` show `***` in its place.

use std::fmt;

use super::ConfigError;

/// A PostgreSQL URL as every PostgreSQL tool takes it
/// (`postgres://user:password@host:port/database?sslmode=require`). Shown redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Checks the URL's scheme (the PostgreSQL backend checks the rest when it connects);
    /// `origin` names where it came from, for the error (`database_url in the config file`,
    /// `--database-url`).
    pub fn parse(url: &str, origin: &str) -> Result<DatabaseUrl, ConfigError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{origin} is empty; give a postgres://user:password@host:port/database URL, or leave it out to use the embedded store at data_dir"
            )));
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid(format!(
                "{origin} {} is not a PostgreSQL URL; write it as postgres://user:password@host:port/database?sslmode=disable|prefer|require|verify-full",
                redact(url)
            )));
        }
        Ok(DatabaseUrl(url.to_owned()))
    }

    /// The URL itself, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", redact(&self.0))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// `url` with the password of its user part and any `password=` parameter replaced by `***`.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        None => ("", url),
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let query: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.to_ascii_lowercase().starts_with("password=") {
                "password=***".to_owned()
            } else {
                p.to_owned()
            }
        })
        .collect();
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    if query.is_empty() {
        format!("{scheme}{authority}{path}")
    } else {
        format!("{scheme}{authority}{path}?{}", query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        for (url, shown) in [
            (
                "postgres://sb:s3cret@db:5432/switchboard?sslmode=require",
                "postgres://sb:***@db:5432/switchboard?sslmode=require",
            ),
            (
                "postgresql://sb@db/switchboard?password=s3cret&sslmode=verify-full",
                "postgresql://sb@db/switchboard?password=***&sslmode=verify-full",
            ),
            ("postgres://db", "postgres://db"),
            ("mysql://root:s3cret@db", "mysql://root:***@db"),
        ] {
            assert_eq!(redact(url), shown);
        }
        let url = DatabaseUrl::parse("postgres://sb:s3cret@db/x", "database_url").unwrap();
        assert!(!format!("{url} {url:?}").contains("s3cret"));
        assert_eq!(url.expose(), "postgres://sb:s3cret@db/x");
    }

    #[test]
    fn a_url_that_is_not_postgres_is_one_clear_line_without_its_password() {
        let error = DatabaseUrl::parse("mysql://root:s3cret@db/x", "database_url")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a PostgreSQL URL"), "{error}");
        assert!(error.contains("mysql://root:***@db/x"), "{error}");
        assert!(
            !error.contains("s3cret") && !error.contains('\n'),
            "{error}"
        );
        let error = DatabaseUrl::parse("  ", "--database-url")
            .unwrap_err()
            .to_string();
        assert!(error.contains("--database-url is empty"), "{error}");
    }
}
