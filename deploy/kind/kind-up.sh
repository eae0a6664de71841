#!/usr/bin/env bash
# Three kind clusters on one machine, wired with no manual steps: `hub` (kepler-collector, a
# Prometheus, its own exporters) and the spokes `cluster1` and `cluster2` (exporters pushing OTLP
# to the hub with a per-cluster bearer token). Builds the image, loads it into every node,
# generates the tokens, finds the hub's node IP and NodePort itself, and prints the verification
# queries with the port-forward to run them. kepler-rs is installed with the Helm chart
# (deploy/helm/kepler-rs, values deploy/kind/helm/kind.yaml); --kustomize applies the kustomize
# overlays (deploy/kind/hub, deploy/kind/spoke) instead.
#
#   deploy/kind/kind-up.sh [--dry-run] [--no-node-share] [--kustomize] [--down]
#
# --dry-run        print every command (and every generated file, tokens redacted) without
#                  running or writing anything
# --no-node-share  exporters take the whole host's energy (counted once per node and cluster)
# --kustomize      install with kubectl apply -k instead of helm
# --down           delete the three clusters and the generated state
#
# Needs: docker, kind, kubectl, and helm (3 or 4) unless --kustomize. Generated state (tokens,
# per-cluster values files or kustomizations) lives in deploy/kind/.state (git-ignored); a
# re-run reuses the tokens and existing clusters.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

DRY_RUN=0
NODE_SHARE=1
DOWN=0
KUSTOMIZE=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --no-node-share) NODE_SHARE=0 ;;
    --kustomize) KUSTOMIZE=1 ;;
    --down) DOWN=1 ;;
    -h | --help)
      sed -n '2,24p' "$0"
      exit 0
      ;;
    *)
      echo "kind-up: unknown argument $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

HUB=hub
SPOKES=(cluster1 cluster2)
IMAGE="${KEPLER_IMAGE:-kepler-rs:dev}"
STATE=deploy/kind/.state
CHART=deploy/helm/kepler-rs
RELEASE=kepler
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.80.1}"
PROMETHEUS_OPERATOR_BUNDLE="https://github.com/prometheus-operator/prometheus-operator/releases/download/${PROMETHEUS_OPERATOR_VERSION}/bundle.yaml"

# Prints a command, then runs it unless this is a dry run.
run() {
  printf '+ %s\n' "$*"
  if ((DRY_RUN == 0)); then
    "$@"
  fi
}

# Prints a command whose output the script needs; in a dry run prints the placeholder instead.
capture() {
  local placeholder="$1"
  shift
  printf '+ %s\n' "$*" >&2
  if ((DRY_RUN)); then
    printf '%s\n' "$placeholder"
  else
    "$@"
  fi
}

# write_file PATH MODE: content on stdin. A dry run prints it instead.
write_file() {
  local path="$1" mode="$2" content
  content="$(cat)"
  printf '+ write %s (mode %s)\n' "$path" "$mode"
  if ((DRY_RUN)); then
    printf '%s\n' "$content" | sed 's/^/    | /'
  else
    mkdir -p "$(dirname "$path")"
    (umask 077 && printf '%s\n' "$content" >"$path")
    chmod "$mode" "$path"
  fi
}

need() {
  if ((DRY_RUN == 0)) && ! command -v "$1" >/dev/null 2>&1; then
    echo "kind-up: $1 is required ($2)" >&2
    exit 1
  fi
}

cluster_exists() {
  ((DRY_RUN == 0)) && kind get clusters 2>/dev/null | grep -qx "$1"
}

# A spoke's token: reused from an earlier run, else 32 random bytes in hex.
token_for() {
  local file="$STATE/tokens/$1"
  if ((DRY_RUN)); then
    printf '<token-%s>\n' "$1"
  elif [ -s "$file" ]; then
    cat "$file"
  else
    mkdir -p "$STATE/tokens"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$file")
    cat "$file"
  fi
}

# With --no-node-share, a patch that turns the kind overlay's node share off again.
node_share_patch() {
  if ((NODE_SHARE == 0)); then
    cat <<'EOF'
patches:
  - target:
      kind: DaemonSet
      name: kepler-exporter
    patch: |-
      - op: test
        path: /spec/template/spec/containers/0/env/2/name
        value: KEPLER_MONITOR_NODE_SHARE
      - op: replace
        path: /spec/template/spec/containers/0/env/2/value
        value: "false"
EOF
  fi
}

if ((DOWN)); then
  need kind "https://kind.sigs.k8s.io"
  for cluster in "$HUB" "${SPOKES[@]}"; do
    run kind delete cluster --name "$cluster"
  done
  run rm -rf "$STATE"
  exit 0
fi

need docker "to build the image"
need kind "https://kind.sigs.k8s.io"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
if ((KUSTOMIZE == 0)); then
  need helm "https://helm.sh/docs/intro/install/ (Helm 3 or 4), or use --kustomize"
fi

# helm_install CLUSTER MODE VALUES: the chart into namespace kepler (created first with the Pod
# Security labels the privileged exporter needs), kind values, then the generated ones.
helm_install() {
  local cluster="$1" mode="$2" values="$3"
  local node_share=()
  if ((NODE_SHARE == 0)); then
    node_share=(--set exporter.nodeShare=false)
  fi
  run kubectl --context "kind-$cluster" apply -f deploy/kustomize/base/namespace.yaml
  run helm upgrade --install "$RELEASE" "$CHART" --kube-context "kind-$cluster" \
    --namespace kepler --set "mode=$mode" -f deploy/kind/helm/kind.yaml -f "$values" \
    "${node_share[@]}" --wait --timeout 180s
}

echo "== 1. clusters"
for cluster in "$HUB" "${SPOKES[@]}"; do
  if cluster_exists "$cluster"; then
    echo "kind cluster $cluster exists; reusing it"
  else
    run kind create cluster --name "$cluster" --config "deploy/kind/$cluster.yaml" --wait 120s
  fi
done

echo "== 2. image (exporter and collector), loaded into every node"
run docker build -t "$IMAGE" -f deploy/image/Containerfile .
for cluster in "$HUB" "${SPOKES[@]}"; do
  run kind load docker-image "$IMAGE" --name "$cluster"
done

echo "== 3. Prometheus on the hub (Prometheus Operator ${PROMETHEUS_OPERATOR_VERSION})"
run kubectl --context "kind-$HUB" apply --server-side -f "$PROMETHEUS_OPERATOR_BUNDLE"
run kubectl --context "kind-$HUB" wait --for=condition=Established --timeout=120s \
  crd/prometheuses.monitoring.coreos.com crd/servicemonitors.monitoring.coreos.com
run kubectl --context "kind-$HUB" apply -k deploy/kind/prometheus

echo "== 4. hub: kepler-collector with one bearer token per spoke"
if ((KUSTOMIZE)); then
  {
    cat <<EOF
# Generated by deploy/kind/kind-up.sh: the kind hub with the spokes' tokens.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../hub
secretGenerator:
  - name: kepler-collector-tokens
    namespace: kepler
    files:
EOF
    for spoke in "${SPOKES[@]}"; do
      printf '      - %s=tokens/%s\n' "$spoke" "$spoke"
    done
    node_share_patch
  } | write_file "$STATE/hub/kustomization.yaml" 600
  for spoke in "${SPOKES[@]}"; do
    token_for "$spoke" | write_file "$STATE/hub/tokens/$spoke" 600
  done
  run kubectl --context "kind-$HUB" apply -k "$STATE/hub"
else
  {
    cat <<EOF
# Generated by deploy/kind/kind-up.sh: the kind hub's spokes and their tokens.
hub:
  spokes:
EOF
    for spoke in "${SPOKES[@]}"; do
      printf '    - %s\n' "$spoke"
    done
    printf '  tokens:\n    values:\n'
    for spoke in "${SPOKES[@]}"; do
      printf '      %s: %s\n' "$spoke" "$(token_for "$spoke")"
    done
  } | write_file "$STATE/hub/values.yaml" 600
  helm_install "$HUB" hub "$STATE/hub/values.yaml"
fi
run kubectl --context "kind-$HUB" -n kepler rollout status deployment/kepler-collector --timeout=180s

echo "== 5. the hub's node IP and the NodePort of its spoke OTLP listener"
HUB_IP="$(capture '<hub-node-ip>' kubectl --context "kind-$HUB" get nodes \
  -o 'jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}')"
HUB_PORT="$(capture '<nodeport-of-4327>' kubectl --context "kind-$HUB" -n kepler get service \
  kepler-collector-spokes -o 'jsonpath={.spec.ports[?(@.name=="spoke-grpc")].nodePort}')"
if ((DRY_RUN == 0)) && { [ -z "$HUB_IP" ] || [ -z "$HUB_PORT" ]; }; then
  echo "kind-up: could not find the hub node IP ($HUB_IP) or NodePort ($HUB_PORT)" >&2
  exit 1
fi
ENDPOINT="http://$HUB_IP:$HUB_PORT"
echo "spokes push to $ENDPOINT"

echo "== 6. spokes"
for spoke in "${SPOKES[@]}"; do
  if ((KUSTOMIZE)); then
    {
      cat <<EOF
# Generated by deploy/kind/kind-up.sh: spoke $spoke pushing to the hub.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../spoke
configMapGenerator:
  - name: kepler-spoke
    namespace: kepler
    behavior: merge
    literals:
      - KEPLER_CLUSTER=$spoke
      - KEPLER_OTLP_ENDPOINT=$ENDPOINT
secretGenerator:
  - name: kepler-spoke-otlp
    namespace: kepler
    envs:
      - otlp.env
EOF
      node_share_patch
    } | write_file "$STATE/$spoke/kustomization.yaml" 600
    printf 'KEPLER_OTLP_HEADERS=authorization=Bearer%%20%s\n' "$(token_for "$spoke")" |
      write_file "$STATE/$spoke/otlp.env" 600
    run kubectl --context "kind-$spoke" apply -k "$STATE/$spoke"
  else
    cat <<EOF | write_file "$STATE/$spoke/values.yaml" 600
# Generated by deploy/kind/kind-up.sh: spoke $spoke pushing to the hub.
spoke:
  cluster: $spoke
  endpoint: $ENDPOINT
  token:
    value: $(token_for "$spoke")
EOF
    helm_install "$spoke" spoke "$STATE/$spoke/values.yaml"
  fi
done

echo "== 7. wait for the exporters"
for cluster in "$HUB" "${SPOKES[@]}"; do
  run kubectl --context "kind-$cluster" -n kepler rollout status daemonset/kepler-exporter --timeout=180s
done

cat <<EOF

== done. Verify on the hub's Prometheus:
  kubectl --context kind-$HUB -n monitoring port-forward service/prometheus-operated 9090:9090
then open http://localhost:9090 (or curl -s localhost:9090/api/v1/query --data-urlencode query=...) and run:
  count by (cluster) (kepler_container_joules_total)
  sum by (cluster) (rate(kepler_container_joules_total[5m]))
  rate(kepler_container_joules_total{cluster="hub"}[5m])
  rate(kepler_container_joules_total{cluster="cluster1"}[5m])
  rate(kepler_container_joules_total{cluster="cluster2"}[5m])
  topk(10, sum by (cluster, container_namespace, pod_name) (rate(kepler_container_joules_total[5m])))
  rate(container_cpu_usage_seconds_total{cluster="cluster1"}[5m])
Every cluster must appear with its own series; with the node share on, the three clusters'
node power adds up to at most the machine's (fake RAPL) power. The dashboard:
deploy/grafana/kepler-hub.json.
EOF
