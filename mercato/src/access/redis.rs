//! The Redis ACL file: a user per client, limited to its own key prefix and to the commands its
//! work needs. The `default` user is turned off, so a client without a user of its own is refused.

use sha2::Digest as _;

use super::AccessError;
use crate::config::Config;

/// One Redis user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUser {
    pub name: String,
    /// Key (and pub/sub channel) prefixes it may touch.
    pub prefixes: Vec<String>,
}

/// The clients of Redis in distributed mode: the gateway (rate limits and shared admin state) and
/// the orders service's cache, with the prefixes their configuration gives them.
#[must_use]
pub fn users(config: &Config) -> Vec<RedisUser> {
    let gateway = &config.gateway;
    vec![
        RedisUser {
            name: mercato_gateway::NAME.to_owned(),
            prefixes: vec![
                gateway.rate_limit.key_prefix.clone(),
                gateway.admin_state.key_prefix.clone(),
            ],
        },
        RedisUser {
            name: format!("{}-cache", mercato_orders::NAME),
            prefixes: vec![config.cache.key_prefix.clone()],
        },
    ]
}

/// The variable (and, with `_FILE`, the file variable) that holds `user`'s password.
#[must_use]
pub fn password_env(user: &str) -> String {
    format!(
        "MERCATO_REDIS_PASSWORD_{}",
        user.to_ascii_uppercase().replace('-', "_")
    )
}

/// `user`'s password from `{env}_FILE` (a file only its owner may read) or `{env}`.
///
/// # Errors
/// [`AccessError::MissingPassword`] when neither is set; see [`super::read_secret_file`].
pub fn password_from_env(user: &str) -> Result<String, AccessError> {
    let env = password_env(user);
    if let Some(path) = std::env::var_os(format!("{env}_FILE")) {
        return super::read_secret_file(std::path::Path::new(&path));
    }
    std::env::var(&env)
        .ok()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AccessError::MissingPassword {
            user: user.to_owned(),
            env,
        })
}

/// The ACL rules of `user` after its name, as `ACL SETUSER` and an ACL file both take them.
#[must_use]
pub fn rules(user: &RedisUser, password: &str) -> Vec<String> {
    let hash: String = sha2::Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut rules = vec!["reset".to_owned(), "on".to_owned(), format!("#{hash}")];
    for prefix in &user.prefixes {
        rules.push(format!("~{prefix}*"));
        rules.push(format!("&{prefix}*"));
    }
    // Reads, writes, scripts (the rate limiter's GCRA runs as one) and pub/sub, but nothing that
    // reaches past a key: no KEYS, FLUSHALL, CONFIG, DEBUG and the rest of @dangerous.
    for category in [
        "-@all",
        "+@read",
        "+@write",
        "+@scripting",
        "+@pubsub",
        "+@connection",
        "-@dangerous",
    ] {
        rules.push(category.to_owned());
    }
    rules
}

/// The ACL file for `users`, each password from `password`.
///
/// # Errors
/// Whatever `password` returns.
pub fn render(
    users: &[RedisUser],
    password: &dyn Fn(&str) -> Result<String, AccessError>,
) -> Result<String, AccessError> {
    let mut out = String::from("user default off\n");
    for user in users {
        let secret = password(&user.name)?;
        out.push_str(&format!(
            "user {} {}\n",
            user.name,
            rules(user, &secret).join(" ")
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_is_held_to_its_prefixes_and_no_password_is_written() {
        let users = users(&Config::default());
        let text = render(&users, &|_| Ok("s3cret".to_owned())).unwrap();
        assert!(!text.contains("s3cret"));
        let cache = text
            .lines()
            .find(|l| l.starts_with("user orders-cache "))
            .unwrap();
        assert!(cache.contains(" ~mercato:cache:* "));
        assert!(!cache.contains("ratelimit"));
        assert!(text.starts_with("user default off\n"));
    }

    #[test]
    fn a_missing_password_names_the_variable() {
        let users = users(&Config::default());
        let err = render(&users, &|u| {
            Err(AccessError::MissingPassword {
                user: u.to_owned(),
                env: password_env(u),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("MERCATO_REDIS_PASSWORD_GATEWAY"));
    }
}
