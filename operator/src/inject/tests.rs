use super::*;

fn defaults() -> Defaults {
    Defaults {
        image: "sigil-sidecar:0.1.0".to_owned(),
        image_pull_policy: "IfNotPresent".to_owned(),
        issuer: "http://sigil-issuer.sigil.svc".to_owned(),
        signing_key: Some(KeyRef { namespace: "sigil".to_owned(), name: "issuer".to_owned() }),
        resources: ResourceRequirements::default(),
    }
}

fn keys() -> Keys {
    Keys {
        config_map: "issuer-jwks".to_owned(),
        algorithm: Algorithm::ES256,
        max_token_lifetime: Duration::from_secs(3600),
    }
}

fn pod(annotations: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "app", "labels": {LABEL_INJECT: INJECT_ENABLED}, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}]}]}
    }))
    .expect("pod")
}

fn minimal() -> Pod {
    pod(serde_json::json!({ANNOTATION_AUDIENCE: "orders", ANNOTATION_UPSTREAM_PORT: "8080"}))
}

fn sidecar_of(pod: &Pod) -> &Container {
    let init = pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()).expect("init containers");
    init.iter().find(|c| c.name == CONTAINER_NAME).expect("sidecar")
}

fn args(pod: &Pod) -> Vec<&str> {
    sidecar_of(pod).args.iter().flatten().map(String::as_str).collect()
}

#[test]
fn a_minimal_pod_gets_a_native_sidecar_with_its_keys_and_a_named_port() {
    let out = inject(&minimal(), &defaults(), &keys()).expect("inject");
    let spec = out.spec.as_ref().expect("spec");
    let init = spec.init_containers.as_ref().expect("init");
    assert_eq!(init[0].name, CONTAINER_NAME, "first, so it is up before any other container");
    let c = sidecar_of(&out);
    assert_eq!(c.restart_policy.as_deref(), Some("Always"), "a native sidecar");
    assert_eq!(
        args(&out),
        [
            "--listen=0.0.0.0:8000",
            "--upstream=http://127.0.0.1:8080",
            "--admin-listen=0.0.0.0:9091",
            "--jwks-file=/etc/sigil/jwks/jwks.json",
            "--issuer=http://sigil-issuer.sigil.svc",
            "--algorithms=ES256",
            "--max-token-lifetime=1h",
            "--audience=orders",
        ]
    );
    let ports: Vec<_> = c.ports.iter().flatten().map(|p| (p.name.as_deref(), p.container_port)).collect();
    assert_eq!(ports, [(Some(PORT_NAME), 8000), (Some(ADMIN_PORT_NAME), 9091)]);
    assert!(c.startup_probe.is_some() && c.readiness_probe.is_some() && c.liveness_probe.is_some());
    let volume = spec.volumes.iter().flatten().find(|v| v.name == VOLUME_NAME).expect("volume");
    assert_eq!(volume.config_map.as_ref().map(|c| c.name.as_str()), Some("issuer-jwks"));
    assert_eq!(spec.containers.len(), 1, "the app is left as it was");
}

#[test]
fn the_sidecar_meets_pod_security_restricted_on_its_own() {
    let out = inject(&minimal(), &defaults(), &keys()).expect("inject");
    let sc = sidecar_of(&out).security_context.as_ref().expect("security context");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_owned()]));
    assert!(sc.capabilities.as_ref().is_some_and(|c| c.add.is_none()));
    assert_eq!(sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert!(sc.privileged.is_none() && sc.run_as_user.is_some_and(|u| u != 0));
}

#[test]
fn every_annotation_reaches_the_sidecar() {
    let p = pod(serde_json::json!({
        ANNOTATION_AUDIENCE: " orders , billing ",
        ANNOTATION_UPSTREAM_PORT: "http",
        ANNOTATION_PUBLIC_PATHS: "/healthz,/docs",
        ANNOTATION_REQUIRE_SCOPES: "/admin=admin  /refunds=refunds:write,orders:read",
        ANNOTATION_PROXY_PORT: "8443",
        ANNOTATION_ADMIN_PORT: "9500",
    }));
    let out = inject(&p, &defaults(), &keys()).expect("inject");
    let a = args(&out);
    for want in [
        "--listen=0.0.0.0:8443",
        "--upstream=http://127.0.0.1:8080",
        "--admin-listen=0.0.0.0:9500",
        "--audience=orders",
        "--audience=billing",
        "--public-path=/healthz",
        "--public-path=/docs",
        "--require-scope=/admin=admin",
        "--require-scope=/refunds=refunds:write,orders:read",
    ] {
        assert!(a.contains(&want), "{want} missing from {a:?}");
    }
    let ports: Vec<_> = sidecar_of(&out).ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [8443, 9500]);
}

#[test]
fn injecting_twice_changes_nothing() {
    let once = inject(&minimal(), &defaults(), &keys()).expect("inject");
    let twice = inject(&once, &defaults(), &keys()).expect("inject again");
    assert_eq!(once, twice);
    // An older injection (another config map) is replaced, never duplicated.
    let newer = Keys { config_map: "other-jwks".to_owned(), ..keys() };
    let again = inject(&once, &defaults(), &newer).expect("inject with new keys");
    let spec = again.spec.as_ref().expect("spec");
    assert_eq!(spec.init_containers.iter().flatten().filter(|c| c.name == CONTAINER_NAME).count(), 1);
    let volumes: Vec<_> = spec.volumes.iter().flatten().filter(|v| v.name == VOLUME_NAME).collect();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].config_map.as_ref().map(|c| c.name.as_str()), Some("other-jwks"));
}

#[test]
fn other_init_containers_and_volumes_are_kept_after_the_sidecar() {
    let mut p = minimal();
    let spec = p.spec.as_mut().expect("spec");
    spec.init_containers = Some(vec![Container { name: "migrate".to_owned(), ..Default::default() }]);
    spec.volumes = Some(vec![Volume { name: "data".to_owned(), ..Default::default() }]);
    let out = inject(&p, &defaults(), &keys()).expect("inject");
    let spec = out.spec.as_ref().expect("spec");
    let init: Vec<_> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(init, [CONTAINER_NAME, "migrate"]);
    let volumes: Vec<_> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(volumes, ["data", VOLUME_NAME]);
}

#[test]
fn missing_and_malformed_annotations_are_refused_with_the_annotation_named() {
    let cases = [
        (serde_json::json!({ANNOTATION_UPSTREAM_PORT: "8080"}), ANNOTATION_AUDIENCE),
        (serde_json::json!({ANNOTATION_AUDIENCE: " , ", ANNOTATION_UPSTREAM_PORT: "8080"}), ANNOTATION_AUDIENCE),
        (serde_json::json!({ANNOTATION_AUDIENCE: "a b", ANNOTATION_UPSTREAM_PORT: "8080"}), ANNOTATION_AUDIENCE),
        (serde_json::json!({ANNOTATION_AUDIENCE: "orders"}), ANNOTATION_UPSTREAM_PORT),
        (serde_json::json!({ANNOTATION_AUDIENCE: "orders", ANNOTATION_UPSTREAM_PORT: "0"}), ANNOTATION_UPSTREAM_PORT),
        (
            serde_json::json!({ANNOTATION_AUDIENCE: "orders", ANNOTATION_UPSTREAM_PORT: "70000"}),
            ANNOTATION_UPSTREAM_PORT,
        ),
        (
            serde_json::json!({ANNOTATION_AUDIENCE: "orders", ANNOTATION_UPSTREAM_PORT: "grpc"}),
            ANNOTATION_UPSTREAM_PORT,
        ),
        (
            serde_json::json!({ANNOTATION_AUDIENCE: "o", ANNOTATION_UPSTREAM_PORT: "8080", ANNOTATION_PUBLIC_PATHS: "docs"}),
            ANNOTATION_PUBLIC_PATHS,
        ),
        (
            serde_json::json!({ANNOTATION_AUDIENCE: "o", ANNOTATION_UPSTREAM_PORT: "8080", ANNOTATION_PUBLIC_PATHS: "/d\u{e9}"}),
            ANNOTATION_PUBLIC_PATHS,
        ),
        (
            serde_json::json!({ANNOTATION_AUDIENCE: "o", ANNOTATION_UPSTREAM_PORT: "8080", ANNOTATION_REQUIRE_SCOPES: "/admin"}),
            ANNOTATION_REQUIRE_SCOPES,
        ),
        (
            serde_json::json!({ANNOTATION_AUDIENCE: "o", ANNOTATION_UPSTREAM_PORT: "8080", ANNOTATION_REQUIRE_SCOPES: "/a=x,,y"}),
            ANNOTATION_REQUIRE_SCOPES,
        ),
        (
            serde_json::json!({ANNOTATION_AUDIENCE: "o", ANNOTATION_UPSTREAM_PORT: "8080", ANNOTATION_PROXY_PORT: "-1"}),
            ANNOTATION_PROXY_PORT,
        ),
    ];
    for (annotations, named) in cases {
        let err = inject(&pod(annotations.clone()), &defaults(), &keys()).expect_err("refused").to_string();
        assert!(err.contains(named), "{annotations}: {err}");
    }
}

#[test]
fn ports_the_app_uses_are_refused_with_the_annotation_to_change() {
    let p = pod(serde_json::json!({ANNOTATION_AUDIENCE: "o", ANNOTATION_UPSTREAM_PORT: "8000"}));
    let err = inject(&p, &defaults(), &keys()).expect_err("proxy port is the upstream");
    assert!(matches!(err, InjectError::PortTaken { port: 8000, annotation: ANNOTATION_PROXY_PORT, .. }), "{err}");
    let p = pod(
        serde_json::json!({ANNOTATION_AUDIENCE: "o", ANNOTATION_UPSTREAM_PORT: "8080", ANNOTATION_ADMIN_PORT: "8080"}),
    );
    let err = inject(&p, &defaults(), &keys()).expect_err("admin port is the app's");
    assert!(matches!(err, InjectError::PortTaken { port: 8080, annotation: ANNOTATION_ADMIN_PORT, .. }), "{err}");
    let p = pod(
        serde_json::json!({ANNOTATION_AUDIENCE: "o", ANNOTATION_UPSTREAM_PORT: "8080", ANNOTATION_ADMIN_PORT: "8000"}),
    );
    assert!(inject(&p, &defaults(), &keys()).is_err(), "proxy and admin on one port");
}

#[test]
fn an_app_container_named_like_the_sidecar_is_refused_not_replaced() {
    let mut p = minimal();
    p.spec.as_mut().expect("spec").containers.push(Container { name: CONTAINER_NAME.to_owned(), ..Default::default() });
    assert_eq!(
        inject(&p, &defaults(), &keys()).expect_err("refused"),
        InjectError::NameTaken(CONTAINER_NAME.to_owned())
    );
}

#[test]
fn the_signing_key_comes_from_the_annotation_or_the_default() {
    let d = defaults();
    assert_eq!(signing_key(&minimal(), "team-a", &d), Ok(KeyRef { namespace: "sigil".into(), name: "issuer".into() }));
    let p = pod(serde_json::json!({ANNOTATION_SIGNING_KEY: "keys/orders"}));
    assert_eq!(signing_key(&p, "team-a", &d), Ok(KeyRef { namespace: "keys".into(), name: "orders".into() }));
    let p = pod(serde_json::json!({ANNOTATION_SIGNING_KEY: "orders"}));
    assert_eq!(signing_key(&p, "team-a", &d), Ok(KeyRef { namespace: "team-a".into(), name: "orders".into() }));
    for bad in ["", "/", "keys/", "Keys/orders", "a/b/c", "keys/orders ", "../x"] {
        let p = pod(serde_json::json!({ANNOTATION_SIGNING_KEY: bad}));
        assert!(signing_key(&p, "team-a", &d).is_err(), "{bad:?} accepted");
    }
    let none = Defaults { signing_key: None, ..d };
    assert_eq!(signing_key(&minimal(), "team-a", &none), Err(InjectError::NoSigningKey));
}
