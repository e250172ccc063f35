//! The admin API's OpenAPI document. Each handler's annotation describes its own answers; the
//! answers of the layers in front of the handlers (the token check, the rate limit, the request
//! deadline) are added here to every route behind them, so a route cannot be mounted behind a
//! layer and documented without it.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    self, ContentBuilder, Header, KnownFormat, ObjectBuilder, Ref, RefOr, Response,
    ResponseBuilder, SchemaFormat, Type,
};

use super::error::ErrorBody;

/// The security scheme that stands for `HOOKD_ADMIN_TOKEN`.
pub const TOKEN_SCHEME: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookd admin API",
        description = "Recovery of the dead-letter queue, statistics, health and metrics of \
            hookd. Every route but the health check needs `Authorization: Bearer \
            <HOOKD_ADMIN_TOKEN>`; without `HOOKD_ADMIN_TOKEN` the admin API is off."
    ),
    tags(
        (name = "dlq", description = "The dead-letter queue"),
        (name = "monitoring", description = "Statistics, health and metrics"),
        (name = "openapi", description = "This document"),
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The document, as `GET /api/openapi.json` serves it and `docs/openapi.json` holds it.
pub fn document() -> openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let mut guarded = super::admin_routes().into_openapi();
    for operation in operations(&mut guarded.paths.paths) {
        behind_token(operation);
    }
    doc.merge(guarded);
    doc.merge(super::open_routes().into_openapi());
    for operation in operations(&mut doc.paths.paths) {
        add(operation, "429", RATE_LIMITED);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        TOKEN_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The value of `HOOKD_ADMIN_TOKEN`"))
                .build(),
        ),
    );
    components.responses.extend(shared_responses());
    doc
}

/// The document as pretty JSON with a final newline: the bytes of `docs/openapi.json`.
pub fn json() -> String {
    let mut text = document()
        .to_pretty_json()
        .expect("an OpenAPI document is plain data and always serialises");
    text.push('\n');
    text
}

static JSON: LazyLock<String> = LazyLock::new(json);

/// This document
///
/// The OpenAPI 3.1 document of the admin API.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "openapi",
    responses(
        (status = 200, description = "The document", body = Object, content_type = "application/json"),
    )
)]
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str())
}

const UNAUTHORIZED: &str = "Unauthorized";
const FORBIDDEN: &str = "Forbidden";
const ADMIN_OFF: &str = "AdminApiOff";
const RATE_LIMITED: &str = "RateLimited";
const UNAVAILABLE: &str = "Unavailable";

/// What `require_token` and the admin router's deadline answer.
fn behind_token(operation: &mut Operation) {
    operation.security = Some(vec![SecurityRequirement::new(
        TOKEN_SCHEME,
        Vec::<String>::new(),
    )]);
    add(operation, "401", UNAUTHORIZED);
    add(operation, "403", FORBIDDEN);
    // A route that also answers 404 for reasons of its own says so in its own description.
    add(operation, "404", ADMIN_OFF);
    add(operation, "503", UNAVAILABLE);
}

fn add(operation: &mut Operation, status: &str, response: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(response)));
}

fn operations<'a>(
    paths: impl IntoIterator<Item = (&'a String, &'a mut PathItem)>,
) -> impl Iterator<Item = &'a mut Operation> {
    paths.into_iter().flat_map(|(_, item)| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .filter_map(Option::as_mut)
    })
}

fn shared_responses() -> Vec<(String, RefOr<Response>)> {
    let error = |description: &str| {
        ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
    };
    let seconds = |description: &str| {
        let mut header = Header::new(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1)),
        );
        header.description = Some(description.to_owned());
        header
    };
    let text = |description: &str| {
        let mut header = Header::new(ObjectBuilder::new().schema_type(Type::String));
        header.description = Some(description.to_owned());
        header
    };
    [
        (
            UNAUTHORIZED,
            error("No bearer token")
                .header("WWW-Authenticate", text("`Bearer`: how to authenticate")),
        ),
        (
            FORBIDDEN,
            error("A bearer token that is not the admin token"),
        ),
        (
            ADMIN_OFF,
            error("The admin API is off: `HOOKD_ADMIN_TOKEN` is not set"),
        ),
        (
            RATE_LIMITED,
            error(
                "This client failed too often (wrong tokens, unknown routes, deliveries that \
                 fail verification) and is turned away for a while",
            )
            .header(
                "Retry-After",
                seconds("Seconds until the client may ask again"),
            ),
        ),
        (
            UNAVAILABLE,
            error(
                "The database did not answer (a JSON error, with `Retry-After`), or the request \
                 was not answered within hookd's request deadline (no body)",
            )
            .header(
                "Retry-After",
                seconds("Seconds to wait before retrying, when the database did not answer"),
            ),
        ),
    ]
    .into_iter()
    .map(|(name, response)| (name.to_owned(), RefOr::T(response.build())))
    .collect()
}
