//! `make demo-local`: Sigil on this machine without pods or root. Starts
//! a local control plane, installs the CRD, runs the operator, applies
//! examples/signingkey.yaml, mounts its Secret and ConfigMap as the kubelet
//! would, and runs the issuer, the sidecar and a demo app behind it. Prints
//! the commands to try, then waits for Ctrl-C and stops everything.

use sigil_e2e::stack::{self, Ports, Stack};
use sigil_e2e::{ControlPlane, repo_root};

const ISSUER_PORT: u16 = 8080;
const SIDECAR_PORT: u16 = 8000;

#[tokio::main]
async fn main() {
    eprintln!("Starting a local control plane (the first run builds Kubernetes from source: ~15 min)...");
    let cp = ControlPlane::shared();
    let example = repo_root().join("examples").join("signingkey.yaml");
    let manifest: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&example).expect("examples/signingkey.yaml")).expect("YAML");
    let name = manifest["metadata"]["name"].as_str().expect("metadata.name").to_owned();
    let namespace = "demo";
    cp.kubectl_ok(&["create", "namespace", namespace]);
    eprintln!("Starting the operator, issuer, sidecar and demo app...");
    let ports = Ports { issuer: Some(ISSUER_PORT), sidecar: Some(SIDECAR_PORT) };
    let stack = Stack::start_on(cp, namespace, &name, manifest["spec"].clone(), ports).await;
    let kubeconfig = cp.kubeconfig.display();
    let kubectl = cp.kubectl.display();
    let logs = stack.dir.join("logs");
    println!(
        r#"
Sigil is running.

  SigningKey   {namespace}/{name} (from examples/signingkey.yaml), Ready
  issuer       {issuer}   (JWKS: {issuer}/.well-known/jwks.json)
  sidecar      {sidecar}  -> demo app
  logs         {logs}

Get a token (client credentials) and call the protected app:

  TOKEN=$(curl -s -u {client}:{secret} -d grant_type=client_credentials {issuer}/token \
          | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -H "Authorization: Bearer $TOKEN" {sidecar}/hello     # 200, with the verified identity
  curl -i {sidecar}/hello                                    # 401, no token

Look at the keys and rotate them:

  export KUBECONFIG={kubeconfig}
  {kubectl} get sk -n {namespace}
  {kubectl} annotate sk {name} -n {namespace} sigil.dev/rotate="$(date +%s)" --overwrite

Press Ctrl-C to stop everything."#,
        issuer = stack.issuer_url,
        sidecar = stack.sidecar_url,
        client = stack::CLIENT_ID,
        secret = stack::CLIENT_SECRET,
        logs = logs.display(),
    );
    sigil_runtime::shutdown::signal().await;
    eprintln!("\nStopping...");
    drop(stack);
    // The control plane's watchdog stops it when this process exits.
}
