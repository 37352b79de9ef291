//! SCIM 2.0 service provider (RFC 7643, RFC 7644): identity providers provision and
//! deprovision users and groups, and Portcullis acts on it at once.
//!
//! `schema` is the one description of what is stored; `filter` parses filters and PATCH
//! paths; `resource` normalises bodies and renders resources; `patch` applies PATCH
//! operations; `sql` turns filters into bound SQL; `store` keeps the directory in SQLite
//! or PostgreSQL; `service` is the HTTP surface with its per-provider credentials.
#![forbid(unsafe_code)]

pub mod error;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod schema;
pub mod service;
pub mod sql;
pub mod store;
