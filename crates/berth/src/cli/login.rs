//! `berth login` (check a token, then save it with its server) and `berth me`.

use super::ClientOpts;
use super::client::{Client, ClientError, SavedLogin, save_login};
use super::output::{Out, text_of};
use reqwest::Method;

pub(super) async fn login(url: String, token: String) -> Result<(), ClientError> {
    let client = Client::resolve(Some(url.clone()), Some(token.clone()))?;
    // Check the token before saving it: /v1/me for tenant tokens, /v1/tenants for the operator.
    let who = match client.call(Method::GET, "/v1/me", None).await {
        Ok(me) => format!(
            "tenant {} as {}",
            text_of(&me["tenant"], "name"),
            text_of(&me["key"], "role")
        ),
        Err(ClientError::Server { code, .. }) if code == "tenant_credential_required" => {
            client
                .call(Method::GET, "/v1/tenants?limit=1", None)
                .await?;
            "the operator".to_owned()
        }
        Err(e) => return Err(e),
    };
    let path = save_login(&SavedLogin { url, token })?;
    // `login` takes no `--json`: the saved file is its result.
    Out::new(false).text(|o| o.line(format!("Logged in as {who}; saved to {}", path.display())));
    Ok(())
}

pub(super) async fn me(opts: &ClientOpts) -> Result<(), ClientError> {
    let me = opts.client()?.call(Method::GET, "/v1/me", None).await?;
    opts.out().show(&me, |v, o| {
        o.line(format!(
            "tenant  {} ({}, plan {})",
            text_of(&v["tenant"], "name"),
            text_of(&v["tenant"], "id"),
            text_of(&v["tenant"], "plan")
        ));
        o.line(format!(
            "key     {} ({}), role {}",
            text_of(&v["key"], "name"),
            text_of(&v["key"], "id"),
            text_of(&v["key"], "role")
        ));
    });
    Ok(())
}
