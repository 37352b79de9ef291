//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// An identity-aware reverse proxy: OpenID Connect login in front of any web app.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the proxy (the default command).
    Serve(ServeArgs),
    /// Validate the configuration and probe the identity providers; exit non-zero on any problem.
    Check(CheckArgs),
    /// Run the proxy with an embedded development identity provider, on loopback only.
    Dev(DevArgs),
    /// Run only the development identity provider, for several local proxies to share.
    DevIdp(DevIdpArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// YAML configuration file. Environment variables override it.
    #[arg(long, short = 'c', value_name = "FILE", env = "PORTCULLIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides LISTEN_ADDR), e.g. 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The app to protect (overrides UPSTREAM_URL), e.g. http://127.0.0.1:3000.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct CheckArgs {
    /// YAML configuration file. Environment variables override it.
    #[arg(long, short = 'c', value_name = "FILE", env = "PORTCULLIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Only validate the configuration; do not contact the identity providers.
    #[arg(long)]
    pub offline: bool,
    /// `text` (a line per finding), or `json` (one document: result, problems, findings).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Explain the decision for this user (an email or a user name) and the request
    /// given as [METHOD] URL, instead of checking: why is someone refused?
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
    /// With --as: the user's groups, comma-separated.
    #[arg(long, value_name = "GROUPS", requires = "as_user")]
    pub groups: Vec<String>,
    /// With --as: a claim, name=value (a comma makes a list); repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE", requires = "as_user")]
    pub claims: Vec<String>,
    /// With --as: the provider the user signs in with (default: the first configured).
    #[arg(long, value_name = "NAME", requires = "as_user")]
    pub provider: Option<String>,
    /// With --as: the `acr` of the login (for routes that require one).
    #[arg(long, value_name = "ACR", requires = "as_user")]
    pub acr: Option<String>,
    /// With --as: the request, [METHOD] URL (a path is taken on the public URL).
    #[arg(value_name = "REQUEST", requires = "as_user")]
    pub request: Vec<String>,
    /// Probe a running deployment from outside, through its real chain, at this origin
    /// (such as https://app.example.com): the known bypass attempts, against the canary
    /// that `diagnostics.canary` serves. Exits 1 if anything got through.
    #[arg(long, value_name = "URL", conflicts_with_all = ["as_user", "offline"])]
    pub live: Option<String>,
    /// With --live: a signed-in test user's credential, for the attempts beside a real
    /// session: the session cookie (`session_token=...`, or a cookies.txt) or
    /// `Bearer <token>`. Read, sent only to the --live URL, never stored.
    #[arg(long, value_name = "FILE", requires = "live")]
    pub cookie_file: Option<PathBuf>,
    /// With --live: extra CA certificates (PEM) to trust for the URL.
    #[arg(long, value_name = "FILE", requires = "live")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DevArgs {
    /// The app to protect, e.g. http://127.0.0.1:3000.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Address to listen on. Loopback only unless --allow-non-loopback is given.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Address of the embedded identity provider (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub idp_listen: String,
    /// Listen on a non-loopback address anyway. The development provider signs in
    /// anyone who asks: never do this on a network you do not control.
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// YAML configuration file (for settings such as allowed users).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DevIdpArgs {
    /// Address to listen on. Loopback only unless --allow-non-loopback is given.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// The client id relying parties use.
    #[arg(long, value_name = "ID", default_value = "portcullis")]
    pub client_id: String,
    /// The client secret; without it the client is public (PKCE only).
    #[arg(long, value_name = "SECRET", env = "DEV_IDP_CLIENT_SECRET")]
    pub client_secret: Option<String>,
    /// A redirect URI to accept (exactly); repeat for several.
    #[arg(long = "redirect-uri", value_name = "URI", required = true)]
    pub redirect_uris: Vec<String>,
    /// Listen on a non-loopback address anyway (it signs in anyone).
    #[arg(long)]
    pub allow_non_loopback: bool,
}
