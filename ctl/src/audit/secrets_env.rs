//! Secrets in environment variables: by name, by credentials in a URL, and by
//! value entropy. Only variable NAMES leave this module; values are looked at
//! here and nowhere else (`docker inspect` shows them to anyone with the socket).

use std::collections::BTreeMap;

/// Why a variable looks like a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Its name says so (`DB_PASSWORD`, `API_KEY`).
    Name,
    /// Its value is a URL with a password in it (`postgres://u:p@db/x`).
    UrlPassword,
    /// Its value is long and random-looking.
    Entropy,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Name => "name looks like a secret",
            Reason::UrlPassword => "value is a URL with a password",
            Reason::Entropy => "value is long and random-looking",
        }
    }
}

/// Name words that mark a secret. Matched against the `_`/`-`/`.`-separated
/// words of the name, so `PASSWORD` matches `DB_PASSWORD` but not `PASSWORDLESS`.
const SECRET_WORDS: [&str; 11] = [
    "PASSWORD",
    "PASSWD",
    "PASS",
    "SECRET",
    "SECRETS",
    "TOKEN",
    "APIKEY",
    "CREDENTIAL",
    "CREDENTIALS",
    "PRIVATE",
    "PASSPHRASE",
];
/// Two-word markers (`API_KEY`, `ACCESS_KEY`, `SECRET_KEY` …).
const SECRET_PAIRS: [[&str; 2]; 6] = [
    ["API", "KEY"],
    ["ACCESS", "KEY"],
    ["PRIVATE", "KEY"],
    ["SECRET", "KEY"],
    ["AUTH", "KEY"],
    ["CLIENT", "SECRET"],
];
/// A last word that makes the variable a reference to a secret, not the secret.
const REFERENCE_SUFFIXES: [&str; 6] = ["FILE", "PATH", "DIR", "NAME", "NAMES", "ID"];
/// Name words of published checksums and key fingerprints (official images
/// ship `PYTHON_SHA256`, `GPG_KEY`): high entropy, not secret.
const DIGEST_WORDS: [&str; 12] = [
    "SHA",
    "SHA1",
    "SHA256",
    "SHA512",
    "MD5",
    "CHECKSUM",
    "HASH",
    "DIGEST",
    "FINGERPRINT",
    "GPG",
    "SUM",
    "VERSION",
];
/// seg's own sidecar settings carry secret NAMES (`SEG_SECRETS=db-password`).
const OWN_PREFIX: &str = "SEG_";

/// Entropy scan: values at least this long ...
const MIN_ENTROPY_LEN: usize = 20;
/// ... with at least this many bits per character (hex tops out at 4.0).
const MIN_BITS_PER_CHAR: f64 = 3.7;

fn words(name: &str) -> Vec<String> {
    name.split(['_', '-', '.']).filter(|w| !w.is_empty()).map(str::to_ascii_uppercase).collect()
}

fn name_says_secret(words: &[String]) -> bool {
    words.iter().any(|w| SECRET_WORDS.contains(&w.as_str()))
        || words.windows(2).any(|p| SECRET_PAIRS.iter().any(|q| p[0] == q[0] && p[1] == q[1]))
}

/// `scheme://user:password@host…` with a non-empty password.
fn url_with_password(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, _host)) = authority.rsplit_once('@') else { return false };
    userinfo.split_once(':').is_some_and(|(_, pw)| !pw.is_empty())
}

/// Shannon entropy in bits per character.
pub fn entropy(value: &str) -> f64 {
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    let mut n = 0usize;
    for ch in value.chars() {
        *counts.entry(ch).or_default() += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts.values().map(|&k| k as f64 / n as f64).map(|p| -p * p.log2()).sum()
}

/// A token (no spaces, no path or list syntax) that looks random: long,
/// mixed character classes, high entropy.
fn random_looking(value: &str) -> bool {
    if value.len() < MIN_ENTROPY_LEN || value.starts_with('/') {
        return false;
    }
    let token = value.chars().all(|c| c.is_ascii_alphanumeric() || "+/=_-.~".contains(c));
    let classes = [
        value.chars().any(|c| c.is_ascii_lowercase()),
        value.chars().any(|c| c.is_ascii_uppercase()),
        value.chars().any(|c| c.is_ascii_digit()),
    ];
    token && classes.iter().filter(|c| **c).count() >= 2 && entropy(value) >= MIN_BITS_PER_CHAR
}

/// Pure: the variables of `env` (`NAME=value` entries) that look like
/// secrets, by name, with why. Sorted by name.
pub fn scan(env: &[String]) -> Vec<(String, Reason)> {
    let mut out: Vec<(String, Reason)> = Vec::new();
    for entry in env {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        if value.is_empty() || name.to_ascii_uppercase().starts_with(OWN_PREFIX) {
            continue;
        }
        let w = words(name);
        let reference = w.last().is_some_and(|l| REFERENCE_SUFFIXES.contains(&l.as_str()));
        let reason = if url_with_password(value) {
            Some(Reason::UrlPassword)
        } else if reference || value.starts_with('/') {
            None
        } else if name_says_secret(&w) {
            Some(Reason::Name)
        } else if !w.iter().any(|x| DIGEST_WORDS.contains(&x.as_str())) && random_looking(value) {
            Some(Reason::Entropy)
        } else {
            None
        };
        if let Some(r) = reason {
            out.push((name.to_owned(), r));
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(env: &[&str]) -> Vec<(String, Reason)> {
        scan(&env.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn names_that_say_secret() {
        let hits = names(&[
            "DB_PASSWORD=hunter2",
            "MYSQL_ROOT_PASS=x",
            "api-key=abc",
            "GITHUB_TOKEN=ghp_x",
            "AWS_SECRET_ACCESS_KEY=abc",
            "Private_Key=-----BEGIN",
            "PASSWORDLESS=yes",
            "PATH=/usr/bin:/bin",
            "PWD=/",
            "HOME=/root",
        ]);
        let got: Vec<&str> = hits.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            got,
            [
                "AWS_SECRET_ACCESS_KEY",
                "DB_PASSWORD",
                "GITHUB_TOKEN",
                "MYSQL_ROOT_PASS",
                "Private_Key",
                "api-key"
            ]
        );
        assert!(hits.iter().all(|(_, r)| *r == Reason::Name));
    }

    #[test]
    fn references_and_seg_settings_are_not_secrets() {
        let hits = names(&[
            "DB_PASSWORD_FILE=/run/secrets/db",
            "POSTGRES_PASSWORD=/run/secrets/pg",
            "SECRET_NAME=db-password",
            "SEG_SECRETS=db-password,api-token",
            "SEG_DIR=/run/secrets",
            "TOKEN=",
            "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
        ]);
        assert!(hits.is_empty(), "{hits:?}");
    }

    #[test]
    fn urls_with_passwords() {
        let hits = names(&[
            "DATABASE_URL=postgres://app:s3cr3t@db:5432/app",
            "HOMEPAGE=https://example.com/a@b",
            "U=http://user@host/",
        ]);
        assert_eq!(hits, [("DATABASE_URL".to_string(), Reason::UrlPassword)]);
    }

    #[test]
    fn random_values_by_entropy_but_not_checksums_or_words() {
        let hits = names(&[
            "APP_CONFIG=q8Zr2LwX9vKp4TmN7sBy1HcD",
            "PYTHON_SHA256=3e1c8d6fb8a0e7a5c7e2b3f9d1a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a0",
            "GPG_KEY=A035C8C19219BA821ECEA86B64E628F8D684696D",
            "GREETING=hello-hello-hello-hello-hello",
            "JAVA_OPTS=-Xmx512m -Xms256m -XX:+UseG1GC",
            "SHORT=aB3dE5",
            "HOSTNAME=4f1c2d3e4f5a",
        ]);
        assert_eq!(hits, [("APP_CONFIG".to_string(), Reason::Entropy)]);
        assert!(entropy("aaaa") < 0.01 && (entropy("ab") - 1.0).abs() < 1e-9);
    }
}
