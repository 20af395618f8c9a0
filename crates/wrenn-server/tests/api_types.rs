//! wrenn-types' API bodies document themselves exactly as the server's OpenAPI document does:
//! for every body, its schema equals the document's component of the same name (so the server
//! can use them without changing `/openapi.json`).

use utoipa::{OpenApi, ToSchema};
use wrenn_server::api_docs::ApiDoc;

fn same<T: ToSchema>(doc: &serde_json::Value) -> Option<String> {
    let name = T::name();
    let want = &doc["components"]["schemas"][name.as_ref()];
    if want.is_null() && name == "SignupPolicy" {
        // A server setting, not in the document.
        return None;
    }
    let got = serde_json::to_value(T::schema()).unwrap();
    (want != &got).then(|| format!("{name}:\n  server: {want}\n  types:  {got}"))
}

#[test]
fn every_body_has_the_servers_schema() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let differ: Vec<String> = [
        same::<wrenn_types::api::accounts::SignupPolicy>(&doc),
        same::<wrenn_types::api::accounts::User>(&doc),
        same::<wrenn_types::api::accounts::Token>(&doc),
        same::<wrenn_types::api::accounts::SignupAccepted>(&doc),
        same::<wrenn_types::api::accounts::LoginResponse>(&doc),
        same::<wrenn_types::api::accounts::SignupBody>(&doc),
        same::<wrenn_types::api::accounts::LoginBody>(&doc),
        same::<wrenn_types::api::accounts::Invitation>(&doc),
        same::<wrenn_types::api::accounts::CreatedInvitation>(&doc),
        same::<wrenn_types::api::accounts::InvitationBody>(&doc),
        same::<wrenn_types::api::capsules::Capsule>(&doc),
        same::<wrenn_types::api::capsules::CreatedCapsule>(&doc),
        same::<wrenn_types::api::capsules::CreateCapsuleBody>(&doc),
        same::<wrenn_types::api::capsules::ExecBody>(&doc),
        same::<wrenn_types::api::capsules::OutputEncoding>(&doc),
        same::<wrenn_types::api::capsules::ExecResult>(&doc),
        same::<wrenn_types::api::capsules::BackgroundProcess>(&doc),
        same::<wrenn_types::api::capsules::ProcessInfo>(&doc),
        same::<wrenn_types::api::capsules::ProcessList>(&doc),
        same::<wrenn_types::api::capsules::MetricsRange>(&doc),
        same::<wrenn_types::api::capsules::MetricPoint>(&doc),
        same::<wrenn_types::api::capsules::CapsuleMetrics>(&doc),
        same::<wrenn_types::api::errors::ErrorCode>(&doc),
        same::<wrenn_types::api::errors::ErrorBody>(&doc),
        same::<wrenn_types::api::errors::ErrorDetail>(&doc),
        same::<wrenn_types::api::errors::Health>(&doc),
        same::<wrenn_types::api::events::Resource>(&doc),
        same::<wrenn_types::api::events::Actor>(&doc),
        same::<wrenn_types::api::events::EventKind>(&doc),
        same::<wrenn_types::api::events::Event>(&doc),
        same::<wrenn_types::api::events::EventFrame>(&doc),
        same::<wrenn_types::api::events::AuditActor>(&doc),
        same::<wrenn_types::api::events::AuditResource>(&doc),
        same::<wrenn_types::api::events::AuditEntry>(&doc),
        same::<wrenn_types::api::events::AuditLog>(&doc),
        same::<wrenn_types::api::files::PathBody>(&doc),
        same::<wrenn_types::api::files::UploadForm>(&doc),
        same::<wrenn_types::api::files::EntryType>(&doc),
        same::<wrenn_types::api::files::FileEntry>(&doc),
        same::<wrenn_types::api::files::FileList>(&doc),
        same::<wrenn_types::api::files::MadeDir>(&doc),
        same::<wrenn_types::api::network::CapsuleNetwork>(&doc),
        same::<wrenn_types::api::network::NetworkPatch>(&doc),
        same::<wrenn_types::api::quotas::Limits>(&doc),
        same::<wrenn_types::api::quotas::Amounts>(&doc),
        same::<wrenn_types::api::quotas::TeamQuotas>(&doc),
        same::<wrenn_types::api::teams::Role>(&doc),
        same::<wrenn_types::api::teams::Team>(&doc),
        same::<wrenn_types::api::teams::TeamMembership>(&doc),
        same::<wrenn_types::api::teams::Member>(&doc),
        same::<wrenn_types::api::teams::ApiKey>(&doc),
        same::<wrenn_types::api::teams::CreatedApiKey>(&doc),
        same::<wrenn_types::api::teams::TeamBody>(&doc),
        same::<wrenn_types::api::teams::AddMemberBody>(&doc),
        same::<wrenn_types::api::teams::RoleBody>(&doc),
        same::<wrenn_types::api::teams::ApiKeyBody>(&doc),
        same::<wrenn_types::api::templates::TemplateType>(&doc),
        same::<wrenn_types::api::templates::Template>(&doc),
        same::<wrenn_types::api::templates::CreateSnapshotBody>(&doc),
        same::<wrenn_types::api::usage::StatsRange>(&doc),
        same::<wrenn_types::api::usage::CurrentUse>(&doc),
        same::<wrenn_types::api::usage::PeakUse>(&doc),
        same::<wrenn_types::api::usage::UseSeries>(&doc),
        same::<wrenn_types::api::usage::CapsuleStats>(&doc),
        same::<wrenn_types::api::usage::UsagePoint>(&doc),
        same::<wrenn_types::api::usage::Usage>(&doc),
        same::<wrenn_types::CapsuleStatus>(&doc),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
