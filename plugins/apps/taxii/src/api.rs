//! The TAXII 2.1 API: routing, authentication, content negotiation and the endpoints.
//!
//! | path | methods |
//! |---|---|
//! | `/taxii2/` | GET: discovery |
//! | `/{root}/` | GET: the API root |
//! | `/{root}/status/{id}/` | GET: the status of an earlier `add objects` |
//! | `/{root}/collections/` | GET: the two collections |
//! | `/{root}/collections/{c}/` | GET: one collection (by id or alias) |
//! | `/{root}/collections/{c}/manifest/` | GET |
//! | `/{root}/collections/{c}/objects/` | GET, POST |
//! | `/{root}/collections/{c}/objects/{id}/` | GET, DELETE |
//! | `/{root}/collections/{c}/objects/{id}/versions/` | GET |
//!
//! Every answer, errors included, is `application/taxii+json;version=2.1`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use threatbus_core::stix::{Operation, StixObject, Timestamp};
use threatbus_core::{Body, BusHandle, Message};
use threatbus_net::server::Client;
use threatbus_store::{Kind, Listed, Listing, VersionSelect};
use threatbus_taxii::{
    ApiRoot, Collection, Collections, Discovery, EnvelopeError, ErrorMessage, Filters, Manifest,
    ManifestRecord, STIX_MEDIA_TYPE, Status, StatusDetails, StatusKind, TAXII_MEDIA_TYPE, Versions,
    accepts_taxii, is_taxii_content_type, parse_envelope, parse_query, write_envelope,
};

use crate::auth::{Caller, Refused, authenticate};
use crate::config::{AccessLog, TaxiiConfig};
use crate::metrics::Meters;
use crate::reader::Readers;
use crate::status::StatusLog;

/// The id of the indicators collection; it never changes.
pub const INDICATORS_ID: &str = "3b8d8b4e-3f5a-4c1e-9c7d-1e2f3a4b5c61";
/// The id of the sightings collection; it never changes.
pub const SIGHTINGS_ID: &str = "3b8d8b4e-3f5a-4c1e-9c7d-1e2f3a4b5c62";

/// What every request handler shares.
pub struct Server {
    pub config: TaxiiConfig,
    pub bus: BusHandle,
    pub readers: Readers,
    pub statuses: StatusLog,
    pub meters: Meters,
    /// `https` or `http`, for the URLs discovery hands out.
    pub scheme: &'static str,
}

/// The answer to a request, with what the access log and the metrics say of it.
struct Answer {
    response: Response<Full<Bytes>>,
    /// Objects sent or taken.
    objects: usize,
}

impl Answer {
    fn new(response: Response<Full<Bytes>>) -> Self {
        Self {
            response,
            objects: 0,
        }
    }
}

/// A TAXII error, answered as an error message.
struct Problem {
    status: StatusCode,
    title: &'static str,
    description: String,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            title,
            description: description.into(),
        }
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", what)
    }

    fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request", description)
    }

    fn store(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "taxii: reading the store failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Store unavailable",
            "the intel store could not be read; the bus log says why",
        )
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let message = ErrorMessage {
            title: self.title.to_owned(),
            description: Some(self.description),
            error_id: None,
            error_code: None,
            http_status: Some(self.status.as_u16().to_string()),
            external_details: None,
            details: None,
        };
        json_response(self.status, &message)
    }
}

type Handled = Result<Answer, Problem>;

/// Which endpoint a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Discovery,
    ApiRoot,
    Status(String),
    Collections,
    Collection(Kind),
    Manifest(Kind),
    Objects(Kind),
    Object(Kind, String),
    Versions(Kind, String),
}

impl Route {
    /// The `endpoint` label of the request metric.
    fn label(&self) -> &'static str {
        match self {
            Self::Discovery => "discovery",
            Self::ApiRoot => "api_root",
            Self::Status(_) => "status",
            Self::Collections => "collections",
            Self::Collection(_) => "collection",
            Self::Manifest(_) => "manifest",
            Self::Objects(_) => "objects",
            Self::Object(..) => "object",
            Self::Versions(..) => "versions",
        }
    }

    /// The methods the endpoint answers.
    fn methods(&self) -> &'static [Method] {
        match self {
            Self::Objects(_) => &[Method::GET, Method::POST],
            Self::Object(..) => &[Method::GET, Method::DELETE],
            _ => &[Method::GET],
        }
    }
}

/// The collection a path segment names: its id or its alias.
fn collection(segment: &str) -> Option<Kind> {
    match segment {
        INDICATORS_ID | "indicators" => Some(Kind::Indicator),
        SIGHTINGS_ID | "sightings" => Some(Kind::Sighting),
        _ => None,
    }
}

/// Reads the path; a missing trailing slash is forgiven.
fn route(path: &str, api_root: &str) -> Option<Route> {
    let trimmed = path.strip_prefix('/')?;
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let segments: Vec<&str> = trimmed.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    match segments.as_slice() {
        ["taxii2"] => Some(Route::Discovery),
        [root, rest @ ..] if *root == api_root => match rest {
            [] => Some(Route::ApiRoot),
            ["status", id] => Some(Route::Status((*id).to_owned())),
            ["collections"] => Some(Route::Collections),
            ["collections", c] => Some(Route::Collection(collection(c)?)),
            ["collections", c, "manifest"] => Some(Route::Manifest(collection(c)?)),
            ["collections", c, "objects"] => Some(Route::Objects(collection(c)?)),
            ["collections", c, "objects", id] => {
                Some(Route::Object(collection(c)?, (*id).to_owned()))
            }
            ["collections", c, "objects", id, "versions"] => {
                Some(Route::Versions(collection(c)?, (*id).to_owned()))
            }
            _ => None,
        },
        _ => None,
    }
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    taxii_response(status, body)
}

fn taxii_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TAXII_MEDIA_TYPE),
    );
    response
}

impl Server {
    /// Answers one request; logs and counts it.
    pub async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
        client: Client,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let route = route(&path, &self.config.api_root);
        let caller = authenticate(
            &self.config.users,
            request
                .headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        );
        let user = caller
            .as_ref()
            .map_or_else(|_| "-".to_owned(), |caller| caller.name.clone());
        let endpoint = route.as_ref().map_or("other", Route::label);
        let answer = match (route, caller) {
            (_, Err(refused)) => Err(unauthorized(refused)),
            (None, Ok(_)) => Err(Problem::not_found(format!(
                "no TAXII endpoint at {path}; discovery is at /taxii2/, the API root at /{}/",
                self.config.api_root
            ))),
            (Some(route), Ok(caller)) => self.endpoint(route, &caller, request).await,
        };
        let answer = answer.unwrap_or_else(|problem| Answer::new(problem.into_response()));
        let status = answer.response.status().as_u16();
        let took = started.elapsed();
        self.meters.answered(endpoint, status, took);
        let micros = took.as_micros() as u64;
        let client = client.address;
        let objects = answer.objects;
        match self.config.access_log {
            AccessLog::Info => {
                tracing::info!(%client, user, %method, path, status, objects, micros, "taxii request")
            }
            AccessLog::Debug => {
                tracing::debug!(%client, user, %method, path, status, objects, micros, "taxii request")
            }
            AccessLog::Off => {}
        }
        let mut response = answer.response;
        if status == 401 {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Threat Bus TAXII\", charset=\"UTF-8\""),
            );
        }
        response
    }

    async fn endpoint(&self, route: Route, caller: &Caller, request: Request<Incoming>) -> Handled {
        let method = request.method().clone();
        if !route.methods().contains(&method) {
            let allowed: Vec<&str> = route.methods().iter().map(Method::as_str).collect();
            let mut response = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                format!(
                    "{method} is not allowed here; allowed: {}",
                    allowed.join(", ")
                ),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return Ok(Answer::new(response));
        }
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok());
        if !accepts_taxii(accept) {
            return Err(Problem::new(
                StatusCode::NOT_ACCEPTABLE,
                "Not acceptable",
                format!(
                    "this server answers {TAXII_MEDIA_TYPE} only; the request accepts {:?}",
                    accept.unwrap_or_default()
                ),
            ));
        }
        if method != Method::GET && !caller.write {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("user {} may read but not write", caller.name),
            ));
        }
        let query = request.uri().query().unwrap_or_default().to_owned();
        let filters = || parse_query(&query).map_err(|err| Problem::bad_request(err.to_string()));
        match route {
            Route::Discovery => Ok(self.discovery(&request)),
            Route::ApiRoot => Ok(Answer::new(json_response(
                StatusCode::OK,
                &ApiRoot {
                    title: "Threat Bus".into(),
                    description: Some(
                        "The indicators and sightings that went over this Threat Bus".into(),
                    ),
                    versions: vec![TAXII_MEDIA_TYPE.into()],
                    max_content_length: self.config.max_content_length as u64,
                },
            ))),
            Route::Status(id) => match self.statuses.get(&id) {
                Some(status) => Ok(Answer::new(json_response(StatusCode::OK, &status))),
                None => Err(Problem::not_found(format!(
                    "no status {id:?} (statuses of the newest {} requests are kept, until a restart)",
                    crate::status::KEPT
                ))),
            },
            Route::Collections => Ok(Answer::new(json_response(
                StatusCode::OK,
                &Collections {
                    collections: vec![
                        describe(Kind::Indicator, caller),
                        describe(Kind::Sighting, caller),
                    ],
                },
            ))),
            Route::Collection(kind) => Ok(Answer::new(json_response(
                StatusCode::OK,
                &describe(kind, caller),
            ))),
            Route::Manifest(kind) => self.manifest(kind, &filters()?).await,
            Route::Objects(kind) if method == Method::POST => self.add(kind, request).await,
            Route::Objects(kind) => self.objects(kind, None, &filters()?).await,
            Route::Object(kind, id) if method == Method::DELETE => self.delete(kind, &id).await,
            Route::Object(kind, id) => self.objects(kind, Some(id), &filters()?).await,
            Route::Versions(kind, id) => self.versions(kind, id, &filters()?).await,
        }
    }

    fn discovery(&self, request: &Request<Incoming>) -> Answer {
        // The API root's URL is absolute (clients follow it as it is): the host the client
        // asked for, or the address the server listens on.
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .filter(|host| is_host_and_port(host))
            .map_or_else(
                || format!("{}:{}", self.config.host, self.config.port),
                str::to_owned,
            );
        let root = format!("{}://{host}/{}/", self.scheme, self.config.api_root);
        Answer::new(json_response(
            StatusCode::OK,
            &Discovery {
                title: "Threat Bus".into(),
                description: Some(
                    "TAXII 2.1 server of a Threat Bus: its intel store's indicators and sightings"
                        .into(),
                ),
                contact: None,
                default: Some(root.clone()),
                api_roots: vec![root],
            },
        ))
    }

    /// One page of `listing`'s versions (the filters' paging and selection applied); `None`
    /// if the filters rule out every object of `kind`.
    async fn page(
        &self,
        kind: Kind,
        id: Option<String>,
        filters: &Filters,
        versions: VersionSelect,
        with_json: bool,
    ) -> Result<Option<Page>, Problem> {
        if !filters.types.is_empty() && !filters.types.iter().any(|t| t == kind.name()) {
            return Ok(None);
        }
        if !filters.spec_versions.is_empty() && !filters.spec_versions.iter().any(|v| v == "2.1") {
            return Ok(None);
        }
        let mut after = filters
            .added_after
            .as_ref()
            .map_or(i64::MIN, threatbus_taxii::time::micros);
        if let Some(next) = &filters.next {
            let cursor: i64 = next.parse().map_err(|_| {
                Problem::bad_request(format!(
                    "next: {next:?} is not a value this server handed out"
                ))
            })?;
            after = after.max(cursor);
        }
        let mut ids: Vec<String> = filters.ids.clone();
        if let Some(id) = id {
            if !ids.is_empty() && !ids.contains(&id) {
                return Ok(None);
            }
            ids = vec![id];
        }
        let limit = filters
            .limit
            .unwrap_or(self.config.page_size)
            .min(self.config.page_size);
        let mut rows = self
            .readers
            .read(move |reader| {
                reader.list(&Listing {
                    kind,
                    added_after: after,
                    ids: &ids,
                    versions: &versions,
                    limit: limit + 1,
                    with_json,
                })
            })
            .await
            .map_err(Problem::store)?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok(Some(Page { rows, more }))
    }

    async fn objects(&self, kind: Kind, id: Option<String>, filters: &Filters) -> Handled {
        let single = id.is_some();
        let page = self
            .page(kind, id.clone(), filters, select(filters), true)
            .await?;
        let page = page.unwrap_or_default();
        if single && page.rows.is_empty() && filters.added_after.is_none() && filters.next.is_none()
        {
            return Err(Problem::not_found(format!(
                "no object {} in this collection (with these filters)",
                id.unwrap_or_default()
            )));
        }
        let mut body = Vec::with_capacity(
            page.rows
                .iter()
                .map(|r| r.json.as_ref().map_or(0, |j| j.len() + 1))
                .sum::<usize>()
                + 64,
        );
        let next = page.next();
        write_envelope(
            &mut body,
            page.more,
            next.as_deref(),
            page.rows.iter().filter_map(|row| row.json.as_ref()),
        );
        let objects = page.rows.len();
        self.meters.served.add(objects as u64);
        Ok(Answer {
            response: page.with_headers(taxii_response(StatusCode::OK, body)),
            objects,
        })
    }

    async fn manifest(&self, kind: Kind, filters: &Filters) -> Handled {
        let page = self
            .page(kind, None, filters, select(filters), false)
            .await?
            .unwrap_or_default();
        let manifest = Manifest {
            more: page.more,
            next: page.next(),
            objects: page
                .rows
                .iter()
                .map(|row| ManifestRecord {
                    id: row.id.clone(),
                    date_added: threatbus_taxii::time::format_micros(row.added),
                    version: version_text(row.modified),
                    media_type: Some(STIX_MEDIA_TYPE.into()),
                })
                .collect(),
        };
        let objects = manifest.objects.len();
        Ok(Answer {
            response: page.with_headers(json_response(StatusCode::OK, &manifest)),
            objects,
        })
    }

    async fn versions(&self, kind: Kind, id: String, filters: &Filters) -> Handled {
        let page = self
            .page(kind, Some(id.clone()), filters, VersionSelect::all(), false)
            .await?
            .unwrap_or_default();
        if page.rows.is_empty() && filters.added_after.is_none() && filters.next.is_none() {
            return Err(Problem::not_found(format!(
                "no object {id} in this collection"
            )));
        }
        let versions = Versions {
            more: page.more,
            next: page.next(),
            versions: page
                .rows
                .iter()
                .map(|row| version_text(row.modified))
                .collect(),
        };
        let objects = versions.versions.len();
        Ok(Answer {
            response: page.with_headers(json_response(StatusCode::OK, &versions)),
            objects,
        })
    }

    /// `add objects`: every valid object of the collection's type goes onto the bus (and from
    /// there into the store); the status says what happened to each.
    async fn add(&self, kind: Kind, request: Request<Incoming>) -> Handled {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        if !is_taxii_content_type(content_type) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                format!(
                    "send the envelope as {TAXII_MEDIA_TYPE}; got {:?}",
                    content_type.unwrap_or_default()
                ),
            ));
        }
        let max = self.config.max_content_length;
        let too_large = || {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                format!("the body is larger than max_content_length ({max} bytes)"),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<u64>().ok());
        if declared.is_some_and(|length| length > max as u64) {
            return Err(too_large());
        }
        let body = tokio::time::timeout(
            self.config.request_timeout,
            Limited::new(request.into_body(), max).collect(),
        )
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request timeout",
                format!(
                    "the body did not arrive within {} s",
                    self.config.request_timeout.as_secs()
                ),
            )
        })?
        .map_err(|err| {
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                Problem::bad_request(format!("the body could not be read: {err}"))
            }
        })?
        .to_bytes();
        let envelope = parse_envelope(&body).map_err(|err| match err {
            EnvelopeError::NotJson(_) => Problem::bad_request(err.to_string()),
            other => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not an envelope",
                other.to_string(),
            ),
        })?;
        let mut status = Status {
            id: uuid::Uuid::new_v4().to_string(),
            status: StatusKind::Complete,
            request_timestamp: Some(threatbus_taxii::time::format_micros(
                threatbus_store::listing::now_micros(),
            )),
            total_count: envelope.objects.len() as u64,
            success_count: 0,
            successes: Vec::new(),
            failure_count: 0,
            failures: Vec::new(),
            pending_count: 0,
            pendings: Vec::new(),
        };
        for raw in &envelope.objects {
            let json = raw.get().as_bytes();
            let outcome = match Message::from_stix_json(json) {
                Ok(message) if kind_of(&message) == Some(kind) => {
                    let details = details_of(&message);
                    match self.bus.publish(message).await {
                        Ok(()) => Ok(details),
                        Err(_) => Err((details, "the bus is stopping".to_owned())),
                    }
                }
                Ok(message) => Err((
                    details_of(&message),
                    format!("this collection takes {}s only", kind.name()),
                )),
                Err(err) => Err((details_of_raw(json), err.to_string())),
            };
            match outcome {
                Ok(details) => {
                    status.success_count += 1;
                    status.successes.push(details);
                }
                Err((mut details, message)) => {
                    details.message = Some(message);
                    status.failure_count += 1;
                    status.failures.push(details);
                }
            }
        }
        self.meters.accepted.add(status.success_count);
        self.meters.refused.add(status.failure_count);
        if status.failure_count > 0 {
            tracing::debug!(
                status = %status.id,
                accepted = status.success_count,
                refused = status.failure_count,
                "taxii: objects refused (the status lists why)"
            );
        }
        let objects = status.success_count as usize;
        let response = json_response(StatusCode::ACCEPTED, &status);
        self.statuses.keep(status);
        Ok(Answer { response, objects })
    }

    /// `delete an object`: withdraws an indicator. The bus publishes a new version marked
    /// `x_threatbus_update: REMOVE`, so sensors drop it and the store marks it withdrawn.
    async fn delete(&self, kind: Kind, id: &str) -> Handled {
        if kind != Kind::Indicator {
            return Err(Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "only indicators can be deleted (withdrawn); sightings stay",
            ));
        }
        let ids = vec![id.to_owned()];
        let current = self
            .readers
            .read(move |reader| {
                reader.list(&Listing {
                    kind,
                    added_after: i64::MIN,
                    ids: &ids,
                    versions: &VersionSelect::last(),
                    limit: 1,
                    with_json: true,
                })
            })
            .await
            .map_err(Problem::store)?;
        let Some(json) = current.into_iter().next().and_then(|row| row.json) else {
            return Err(Problem::not_found(format!(
                "no indicator {id} in this collection"
            )));
        };
        let message = Message::from_stix_json(&json).map_err(Problem::store)?;
        let Body::Indicator(indicator) = message.body() else {
            return Err(Problem::not_found(format!(
                "no indicator {id} in this collection"
            )));
        };
        if indicator.update() == Some(Operation::Remove) {
            return Ok(Answer::new(taxii_response(StatusCode::OK, Vec::new())));
        }
        let mut withdrawn = indicator.clone();
        withdrawn
            .extra
            .insert("x_threatbus_update", &serde_json::Value::from("REMOVE"));
        withdrawn.modified = later_than(&indicator.modified);
        self.bus
            .publish(Message::from_stix(StixObject::Indicator(withdrawn)))
            .await
            .map_err(|_| {
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Stopping",
                    "the bus is stopping",
                )
            })?;
        self.meters.accepted.inc();
        Ok(Answer {
            response: taxii_response(StatusCode::OK, Vec::new()),
            objects: 1,
        })
    }
}

/// Answers a request without (good) credentials.
fn unauthorized(refused: Refused) -> Problem {
    let description = match refused {
        Refused::NoCredentials => "this server needs HTTP Basic credentials",
        Refused::WrongCredentials => "unknown user or wrong password",
    };
    Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", description)
}

/// One page of listed versions.
#[derive(Default)]
struct Page {
    rows: Vec<Listed>,
    more: bool,
}

impl Page {
    /// The cursor of the next page: the `added` time of this page's last version.
    fn next(&self) -> Option<String> {
        self.more
            .then(|| self.rows.last().map(|row| row.added.to_string()))
            .flatten()
    }

    /// Adds the `X-TAXII-Date-Added-First` and `-Last` headers.
    fn with_headers(&self, mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
        let (Some(first), Some(last)) = (self.rows.first(), self.rows.last()) else {
            return response;
        };
        for (name, added) in [
            ("x-taxii-date-added-first", first.added),
            ("x-taxii-date-added-last", last.added),
        ] {
            if let Ok(value) = HeaderValue::from_str(&threatbus_taxii::time::format_micros(added)) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// The store's selection for the filters' `match[version]`.
fn select(filters: &Filters) -> VersionSelect {
    VersionSelect {
        last: filters.versions.last,
        first: filters.versions.first,
        all: filters.versions.all,
        at: filters
            .versions
            .at
            .iter()
            .map(|at| i64::try_from(at.as_nanosecond()).unwrap_or(i64::MAX))
            .collect(),
    }
}

/// The collection resource of `kind`, as `caller` may use it.
fn describe(kind: Kind, caller: &Caller) -> Collection {
    let (id, title, alias, description) = match kind {
        Kind::Indicator => (
            INDICATORS_ID,
            "Indicators",
            "indicators",
            "Every STIX 2.1 Indicator the bus carried, with its versions",
        ),
        Kind::Sighting => (
            SIGHTINGS_ID,
            "Sightings",
            "sightings",
            "Every STIX 2.1 Sighting the bus carried",
        ),
    };
    Collection {
        id: id.into(),
        title: title.into(),
        description: Some(description.into()),
        alias: Some(alias.into()),
        can_read: true,
        can_write: caller.write,
        media_types: vec![STIX_MEDIA_TYPE.into()],
    }
}

fn kind_of(message: &Message) -> Option<Kind> {
    match message.body() {
        Body::Indicator(_) => Some(Kind::Indicator),
        Body::Sighting(_) => Some(Kind::Sighting),
        _ => None,
    }
}

/// The id and version of a valid object.
fn details_of(message: &Message) -> StatusDetails {
    let (id, modified) = match message.body() {
        Body::Indicator(i) => (i.id.to_string(), i.modified.to_stix_string(3)),
        Body::Sighting(s) => (s.id.to_string(), s.modified.to_stix_string(3)),
        _ => (String::new(), String::new()),
    };
    StatusDetails {
        id,
        version: modified,
        message: None,
    }
}

/// The id and version of an object that is not valid, as far as they can be read.
fn details_of_raw(json: &[u8]) -> StatusDetails {
    let value: Option<serde_json::Value> = serde_json::from_slice(json).ok();
    let field = |key: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(|v| v.as_str())
            .map(|text| text.chars().take(200).collect::<String>())
            .unwrap_or_default()
    };
    StatusDetails {
        id: field("id"),
        version: field("modified"),
        message: None,
    }
}

/// Whether a `Host` header value can stand between `scheme://` and the API root's path: a
/// host name or address and an optional port, nothing that would end the authority (`/`, `?`,
/// `#`) or add user information (`@`).
fn is_host_and_port(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~:[]%".contains(c))
}

/// A version's text: its `modified` with at least millisecond digits.
fn version_text(modified: i64) -> String {
    let Ok(instant) = jiff::Timestamp::from_nanosecond(i128::from(modified)) else {
        return modified.to_string();
    };
    let mut digits = 9;
    let mut fraction = instant.subsec_nanosecond().unsigned_abs();
    while digits > 3 && fraction.is_multiple_of(10) {
        fraction /= 10;
        digits -= 1;
    }
    format!("{instant:.digits$}")
}

/// A `modified` for the next version of an object at `modified`: now, at least a millisecond
/// later than `modified`.
fn later_than(modified: &Timestamp) -> Timestamp {
    let now = jiff::Timestamp::now();
    let floor = i128::from(i64::try_from(modified.as_nanosecond()).unwrap_or(i64::MAX)) + 1_000_000;
    let chosen = if now.as_nanosecond() >= floor {
        now
    } else {
        jiff::Timestamp::from_nanosecond(floor).unwrap_or(now)
    };
    let text = format!("{chosen:.3}");
    Timestamp::parse(&text).unwrap_or(*modified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_endpoints_with_or_without_the_trailing_slash() {
        let r = |path: &str| route(path, "tb");
        assert_eq!(r("/taxii2/"), Some(Route::Discovery));
        assert_eq!(r("/taxii2"), Some(Route::Discovery));
        assert_eq!(r("/tb/"), Some(Route::ApiRoot));
        assert_eq!(r("/tb/status/abc/"), Some(Route::Status("abc".into())));
        assert_eq!(r("/tb/collections/"), Some(Route::Collections));
        assert_eq!(
            r(&format!("/tb/collections/{INDICATORS_ID}/")),
            Some(Route::Collection(Kind::Indicator))
        );
        assert_eq!(
            r("/tb/collections/sightings/manifest/"),
            Some(Route::Manifest(Kind::Sighting))
        );
        assert_eq!(
            r("/tb/collections/indicators/objects/indicator--x/versions/"),
            Some(Route::Versions(Kind::Indicator, "indicator--x".into()))
        );
        for bad in [
            "/",
            "",
            "/other/",
            "/tb//collections/",
            "/tb/collections/nope/",
            "/tb/collections/indicators/objects/a/b/",
            "taxii2/",
        ] {
            assert_eq!(r(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_host_and_port_goes_into_discovery_urls() {
        for good in [
            "127.0.0.1:13380",
            "taxii.example.org",
            "[::1]:443",
            "[fe80::1%25eth0]",
        ] {
            assert!(is_host_and_port(good), "{good}");
        }
        for bad in [
            "",
            "evil.example/x",
            "a@b",
            "a?b",
            "a#b",
            "a b",
            "a\\b",
            &"a".repeat(256),
        ] {
            assert!(!is_host_and_port(bad), "{bad}");
        }
    }

    #[test]
    fn versions_print_with_millisecond_digits_at_least() {
        let ns =
            |text: &str| i64::try_from(Timestamp::parse(text).unwrap().as_nanosecond()).unwrap();
        assert_eq!(
            version_text(ns("2030-01-02T03:04:05Z")),
            "2030-01-02T03:04:05.000Z"
        );
        assert_eq!(
            version_text(ns("2030-01-02T03:04:05.123456Z")),
            "2030-01-02T03:04:05.123456Z"
        );
        let old = Timestamp::parse("2099-01-01T00:00:00.000Z").unwrap();
        assert_eq!(
            later_than(&old).to_stix_string(3),
            "2099-01-01T00:00:00.001Z"
        );
        let past = Timestamp::parse("2020-01-01T00:00:00.000Z").unwrap();
        assert!(later_than(&past).as_nanosecond() > past.as_nanosecond() + 1_000_000);
    }
}
