//! `portcullis dev`: the proxy plus the embedded development identity provider, so a new
//! user can try Portcullis in front of a local app with nothing else installed.
//!
//! The provider is reached over HTTP through the same discovery, code flow and token
//! verification as any other provider. It signs in anyone, so this command refuses a
//! non-loopback address unless forced, and says loudly what it is.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use portcullis_config::{ProviderConfig, SecretString, Url};
use portcullis_devidp::{Client, DevIdp, WhoAmI};

use crate::cli::{DevArgs, DevIdpArgs};
use crate::logging;
use crate::serve::{bind, env_vars, load_config, run_with};

const CLIENT_ID: &str = "portcullis-dev";

/// In dev mode the embedded provider is the only provider: settings that would configure
/// another are ignored. Allowed users still apply.
fn keep_env(name: &str) -> bool {
    let provider_setting = (name.starts_with("OAUTH_") && name != "OAUTH_ALLOWED_USERS")
        || name.starts_with("AUTH__OPENID_CONNECT__");
    !provider_setting
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    let listen: SocketAddr = match args.listen.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!(
                "portcullis dev: --listen `{}` is not an address with a port. Fix: write e.g. 127.0.0.1:8080",
                args.listen
            );
            return Ok(ExitCode::from(2));
        }
    };
    if !listen.ip().is_loopback() && !args.allow_non_loopback {
        eprintln!(
            "portcullis dev: refusing to listen on {listen}: the development identity provider signs in anyone, so dev mode stays on loopback. Fix: use 127.0.0.1, or pass --allow-non-loopback if you really mean it"
        );
        return Ok(ExitCode::from(2));
    }
    let idp_listen: SocketAddr = args.idp_listen.parse().with_context(|| {
        format!(
            "--idp-listen `{}` is not an address with a port",
            args.idp_listen
        )
    })?;
    if !idp_listen.ip().is_loopback() && !args.allow_non_loopback {
        eprintln!(
            "portcullis dev: refusing to run the development identity provider on {idp_listen}. Fix: use a loopback address"
        );
        return Ok(ExitCode::from(2));
    }

    let mut flags = vec![("listen_addr", "--listen", listen.to_string())];
    if let Some(upstream) = args.upstream {
        flags.push(("upstream_url", "--upstream", upstream));
    }
    // Without an app of your own (no --upstream, UPSTREAM_URL or upstream_url in the
    // file), the built-in "who am I" app stands in.
    let whoami = WhoAmI::start(SocketAddr::new([127, 0, 0, 1].into(), 0))
        .await
        .context("cannot start the built-in who-am-I app")?;
    let defaults = vec![
        ("cookie_secret", portcullis_core::random::token()),
        ("upstream_url", whoami.url()),
    ];
    let env: Vec<(String, String)> = env_vars()
        .into_iter()
        .filter(|(k, _)| keep_env(k))
        .collect();
    // What a reload reads again: the same sources, the same generated secret.
    let sources = portcullis_config::Sources {
        file: args.config.clone(),
        env: env.clone(),
        defaults: defaults.clone(),
        flags: flags.clone(),
    };
    let mut config = match load_config(args.config.clone(), env, defaults, flags) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    logging::init(&config.log)?;
    let builtin_app = config
        .upstream_url
        .as_ref()
        .is_some_and(|u| u.as_str().trim_end_matches('/') == whoami.url());
    let whoami = builtin_app.then_some(whoami);

    let listener = bind(&config)?;
    let bound = listener.local_addr()?;
    let browser_host = if bound.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), bound.port())
    } else {
        bound
    };
    let redirect = Url::parse(&format!("http://{browser_host}/api/v1/auth/callback"))?;
    let client_secret = portcullis_core::random::token();
    let idp = DevIdp::start(
        idp_listen,
        vec![Client {
            id: CLIENT_ID.into(),
            secret: Some(client_secret.clone()),
            redirect_uris: vec![redirect.to_string()],
        }],
    )
    .await
    .with_context(|| format!("cannot start the development identity provider on {idp_listen}"))?;

    let issuer = Url::parse(idp.issuer())?;
    use_dev_provider(&mut config, &redirect, &client_secret, &issuer);
    let load: crate::reload::LoadAgain = Box::new(move || {
        let mut config = portcullis_config::load(&sources)?;
        use_dev_provider(&mut config, &redirect, &client_secret, &issuer);
        Ok(config)
    });

    eprintln!(
        "\n  ********************************************************************\n  *  portcullis dev: DEVELOPMENT MODE. NOT FOR PRODUCTION.           *\n  *  The embedded identity provider signs in ANYONE who fills in its *\n  *  form. Use it only on your own machine.                          *\n  ********************************************************************\n\n  App:      {}\n  Open:     http://{browser_host}/\n  IdP:      {}\n",
        match (&whoami, &config.upstream_url) {
            (Some(_), _) => "the built-in \"who am I\" page (give --upstream http://127.0.0.1:3000 for your own app)".to_string(),
            (None, Some(u)) => u.to_string(),
            (None, None) => "?".to_string(),
        },
        idp.issuer()
    );
    tracing::warn!(issuer = %idp.issuer(), "development identity provider running: it signs in anyone; never expose it");
    let code = run_with(config, listener, Some((load, args.config))).await;
    drop(idp);
    drop(whoami);
    code
}

/// Makes the embedded provider the only one.
fn use_dev_provider(
    config: &mut portcullis_config::Config,
    redirect: &Url,
    secret: &str,
    issuer: &Url,
) {
    config.auth.enabled = true;
    config.auth.redirect_url = Some(redirect.clone());
    config.auth.providers = vec![ProviderConfig {
        client_secret: Some(SecretString::from(secret.to_string())),
        ..ProviderConfig::oidc("dev", "Development IdP", issuer.clone(), CLIENT_ID)
    }];
}

/// `portcullis dev-idp`: the development provider alone.
pub(crate) async fn run_idp(args: DevIdpArgs) -> anyhow::Result<ExitCode> {
    let listen: SocketAddr = match args.listen.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!(
                "portcullis dev-idp: --listen `{}` is not an address with a port",
                args.listen
            );
            return Ok(ExitCode::from(2));
        }
    };
    if !listen.ip().is_loopback() && !args.allow_non_loopback {
        eprintln!(
            "portcullis dev-idp: refusing to listen on {listen}: the development identity provider signs in anyone. Fix: use a loopback address, or pass --allow-non-loopback"
        );
        return Ok(ExitCode::from(2));
    }
    let idp = DevIdp::start(
        listen,
        vec![Client {
            id: args.client_id.clone(),
            secret: args.client_secret,
            redirect_uris: args.redirect_uris,
        }],
    )
    .await
    .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!(
        "portcullis dev-idp: DEVELOPMENT identity provider, signs in ANYONE. Not for production."
    );
    println!("issuer {}", idp.issuer());
    let _ = tokio::signal::ctrl_c().await;
    Ok(ExitCode::SUCCESS)
}
