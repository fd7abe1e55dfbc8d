//! What the exposure of ingest amounts to (pure): the `status.exposure` entry and the
//! `ExposureReady` condition, from the configuration and the HTTPRoute or Ingress as the
//! API server holds it after `apply` (its status written by the gateway's controller).

use super::conditions::{ConditionType, ExposureSeen, Observed, Reason};
use crate::config::{Config, ExposureVia};
use crate::crd::{ExposureKind, ExposureStatus};
use crate::resources::exposure::{Exposed, RouteVerdict, route_verdict, url};
use crate::tenant::Validated;

const EXPOSURE_READY: ConditionType = ConditionType::ExposureReady;

/// `applied` is what `apply` returned: the exposure object, if one is desired.
pub fn observe(
    tenant: &Validated,
    config: &Config,
    applied: Option<&Exposed>,
) -> (ExposureSeen, Option<Observed>) {
    let (Some(exposure), Some(applied)) = (&config.exposure, applied) else {
        return (ExposureSeen::Off, None);
    };
    let url = url(tenant, exposure);
    let (kind, condition) = match (applied, &exposure.via) {
        (Exposed::Route(route), ExposureVia::Gateway(gateway)) => {
            let gateway_name = format!("{}/{}", gateway.namespace, gateway.name);
            let condition = match route_verdict(route, gateway) {
                RouteVerdict::Accepted => Observed::ok(
                    EXPOSURE_READY,
                    Reason::RouteAccepted,
                    format!("HTTPRoute ingest is accepted by Gateway {gateway_name}: {url}"),
                ),
                RouteVerdict::NotAccepted { reason, message } => Observed::not_ok(
                    EXPOSURE_READY,
                    Reason::RouteNotAccepted,
                    format!(
                        "Gateway {gateway_name} does not accept HTTPRoute ingest: {reason}: {message}"
                    ),
                ),
                RouteVerdict::Unknown => Observed::not_ok(
                    EXPOSURE_READY,
                    Reason::WaitingForGateway,
                    format!(
                        "HTTPRoute ingest waits for Gateway {gateway_name}'s controller to accept it"
                    ),
                ),
            };
            (ExposureKind::HttpRoute, condition)
        }
        // An Ingress has no verdict of its controller to read; its class and TLS Secret
        // are the platform's.
        (Exposed::Ingress(_), _) => (
            ExposureKind::Ingress,
            Observed::ok(
                EXPOSURE_READY,
                Reason::IngressApplied,
                format!("Ingress ingest is in place: {url}"),
            ),
        ),
        // Built from the same configuration, so the kinds always agree.
        (Exposed::Route(_), ExposureVia::Ingress { .. }) => return (ExposureSeen::Off, None),
    };
    (
        ExposureSeen::On(ExposureStatus { url, kind }),
        Some(condition),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Exposure, ExposureFlags};
    use crate::resources::exposure::exposure;
    use crate::resources::gateway_api::{HttpRouteStatus, RouteCondition, RouteParentStatus};
    use crate::test_support::{tenant, validate};

    fn gateway_config() -> Config {
        Config {
            exposure: Exposure::from_flags(&ExposureFlags {
                gateway: Some("gateway-system/public".into()),
                domain: Some("ingest.example.it".into()),
                ..ExposureFlags::default()
            })
            .unwrap(),
            ..Config::default()
        }
    }

    #[test]
    fn a_route_is_ready_once_its_gateway_accepts_it_and_waits_until_then() {
        let config = gateway_config();
        let prato = validate(&tenant("prato").build(), &config).unwrap();
        let Some(Exposed::Route(mut route)) = exposure(&prato, &config) else {
            panic!("no route");
        };
        let (seen, condition) = observe(&prato, &config, Some(&Exposed::Route(route.clone())));
        let condition = condition.unwrap();
        assert!(condition.pending(), "{condition:?}");
        assert_eq!(condition.reason, Reason::WaitingForGateway);
        assert_eq!(
            seen,
            ExposureSeen::On(ExposureStatus {
                url: "https://prato.ingest.example.it/".into(),
                kind: ExposureKind::HttpRoute
            })
        );

        let verdict = |status: &str| RouteParentStatus {
            parent_ref: route.spec.parent_refs[0].clone(),
            controller_name: "example.org/gateway".into(),
            conditions: vec![RouteCondition {
                type_: "Accepted".into(),
                status: status.into(),
                reason: "NotAllowedByListeners".into(),
                message: "no listener admits namespace srt-prato".into(),
                observed_generation: None,
            }],
        };
        route.status = Some(HttpRouteStatus {
            parents: vec![verdict("True")],
        });
        let (_, accepted) = observe(&prato, &config, Some(&Exposed::Route(route.clone())));
        assert_eq!(accepted.unwrap().reason, Reason::RouteAccepted);
        route.status = Some(HttpRouteStatus {
            parents: vec![verdict("False")],
        });
        let (_, refused) = observe(&prato, &config, Some(&Exposed::Route(route)));
        let refused = refused.unwrap();
        assert!(refused.warning());
        assert!(
            refused.message.contains("no listener admits"),
            "{refused:?}"
        );
    }

    #[test]
    fn not_exposed_is_off() {
        let config = Config::default();
        let prato = validate(&tenant("prato").build(), &config).unwrap();
        assert_eq!(observe(&prato, &config, None), (ExposureSeen::Off, None));
    }
}
