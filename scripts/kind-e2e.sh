#!/usr/bin/env bash
# tiermq on a real Kubernetes cluster (kind or minikube): installs the Helm chart with the
# official RabbitMQ image, runs an AMQP load Job through the instance Service and converts the
# instance shared -> dedicated -> shared with kubectl, then checks that no confirmed message was
# lost, that the phases came in order and that the dedicated StatefulSet is gone.
#
# Needs: a container engine (docker or podman), kind or minikube, kubectl, helm.
# This script has NOT been run on the project's own machines (they have no container engine);
# see docs/real-clusters.md for what was verified where.
#
# Environment:
#   CLUSTER_TOOL=kind|minikube   (default kind)
#   CONTAINER_ENGINE=docker|podman (default docker)
#   CLUSTER_NAME=tiermq-e2e      DRAIN=Consume|Shovel (default Consume)
#   KEEP_CLUSTER=1               keep the cluster afterwards (default: deleted on exit)
#   RABBITMQ_IMAGE=rabbitmq:4.0-management  (the CRDs' default image)
#   KIND_NODE_IMAGE=kindest/node:v1.33.x  node image for kind (default: kind's own, which must be
#                                          Kubernetes 1.33-1.37: the chart's kubeVersion)
#   MINIKUBE_KUBERNETES_VERSION=v1.33.x   the same for minikube
set -euo pipefail

CLUSTER_TOOL=${CLUSTER_TOOL:-kind}
ENGINE=${CONTAINER_ENGINE:-docker}
CLUSTER=${CLUSTER_NAME:-tiermq-e2e}
DRAIN=${DRAIN:-Consume}
KEEP=${KEEP_CLUSTER:-0}
RABBITMQ_IMAGE=${RABBITMQ_IMAGE:-rabbitmq:4.0-management}
IMAGE_REPO=tiermq/tiermq-operator
IMAGE_TAG=e2e
IMAGE="$IMAGE_REPO:$IMAGE_TAG"
NS=team-a
NAME=orders
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[kind-e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'kind-e2e: %s\n' "$*" >&2; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"; }

# --- fail fast on missing tools -------------------------------------------------------------
case "$CLUSTER_TOOL" in
  kind) need kind "install kind (https://kind.sigs.k8s.io) or set CLUSTER_TOOL=minikube" ;;
  minikube) need minikube "install minikube or set CLUSTER_TOOL=kind" ;;
  *) die "CLUSTER_TOOL must be kind or minikube, not '$CLUSTER_TOOL'" ;;
esac
need "$ENGINE" "a container engine is required to build the operator image (set CONTAINER_ENGINE=podman to use podman)"
need kubectl "install kubectl 1.29 or newer"
need helm "install Helm 3 or 4 (\`make tools\` puts Helm 4.1.4 into .tools/bin; add that to PATH)"
"$ENGINE" info >/dev/null 2>&1 || die "'$ENGINE info' failed: is the container engine running and may this user use it?"

WORK="$(mktemp -d -t tiermq-kind-e2e.XXXXXX)"

cleanup() {
  local rc=$?
  if [[ -n "${WATCH_PID:-}" ]]; then kill "$WATCH_PID" 2>/dev/null || true; fi
  if [[ "$KEEP" != 1 ]]; then
    log "deleting cluster $CLUSTER (KEEP_CLUSTER=1 keeps it)"
    case "$CLUSTER_TOOL" in
      kind) kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true ;;
      minikube) minikube delete -p "$CLUSTER" >/dev/null 2>&1 || true ;;
    esac
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

# --- cluster and image ------------------------------------------------------------------------
log "creating $CLUSTER_TOOL cluster $CLUSTER"
case "$CLUSTER_TOOL" in
  kind)
    kind get clusters 2>/dev/null | grep -qx "$CLUSTER" ||
      kind create cluster --name "$CLUSTER" --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
    kubectl config use-context "kind-$CLUSTER" >/dev/null ;;
  minikube)
    minikube status -p "$CLUSTER" >/dev/null 2>&1 ||
      minikube start -p "$CLUSTER" --driver="$ENGINE" --cpus=4 --memory=6g \
        ${MINIKUBE_KUBERNETES_VERSION:+--kubernetes-version="$MINIKUBE_KUBERNETES_VERSION"}
    kubectl config use-context "$CLUSTER" >/dev/null ;;
esac

log "building $IMAGE (operator + load generator)"
"$ENGINE" build -f "$ROOT/scripts/kind/Dockerfile" -t "$IMAGE" "$ROOT"
log "loading $IMAGE and $RABBITMQ_IMAGE into the cluster"
"$ENGINE" pull "$RABBITMQ_IMAGE" >/dev/null
case "$CLUSTER_TOOL" in
  kind) kind load docker-image "$IMAGE" "$RABBITMQ_IMAGE" --name "$CLUSTER" ;;
  minikube) minikube -p "$CLUSTER" image load "$IMAGE"; minikube -p "$CLUSTER" image load "$RABBITMQ_IMAGE" ;;
esac

# --- operator via the chart -------------------------------------------------------------------
log "helm install tiermq (charts/tiermq) into tiermq-system"
helm upgrade --install tiermq "$ROOT/charts/tiermq" \
  --namespace tiermq-system --create-namespace \
  --set image.repository="$IMAGE_REPO" --set image.tag="$IMAGE_TAG" --set image.pullPolicy=Never \
  --set operator.logFormat=pretty --set operator.drainPollSeconds=1 \
  --wait --timeout 180s
kubectl -n tiermq-system rollout status deployment --timeout=120s

log "applying SharedCluster main and instance $NS/$NAME (drain $DRAIN)"
kubectl apply -f - <<YAML
apiVersion: tiermq.io/v1alpha1
kind: SharedCluster
metadata:
  name: main
  namespace: tiermq-system
spec:
  replicas: 1
  image: $RABBITMQ_IMAGE
  storage:
    size: 1Gi
---
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
---
apiVersion: tiermq.io/v1alpha1
kind: RabbitMQInstance
metadata:
  name: $NAME
  namespace: $NS
spec:
  series: Subscription
  tier: Shared
  dedicated:
    replicas: 1
    image: $RABBITMQ_IMAGE
    storage:
      size: 1Gi
  shared:
    clusterRef:
      name: main
      namespace: tiermq-system
  migration:
    drainStrategy: $DRAIN
    drainTimeoutSeconds: 600
    gracePeriodSeconds: 15
YAML
kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Ready "rmqi/$NAME" --timeout=420s
kubectl get rmqi -A

# --- load Job ---------------------------------------------------------------------------------
# The load generator only targets loopback addresses; a native sidecar (socat) forwards the pod's
# 127.0.0.1:5672 to the instance Service, one upstream connection per client connection, so every
# reconnect goes through the Service again exactly as an in-cluster client would.
log "starting the load Job (2 publishers with confirms, 2 consumers with manual acks)"
kubectl -n "$NS" apply -f - <<YAML
apiVersion: batch/v1
kind: Job
metadata:
  name: tiermq-load
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      initContainers:
        - name: service-proxy
          image: alpine/socat:1.8.0.0
          restartPolicy: Always
          args: ["TCP-LISTEN:5672,bind=127.0.0.1,fork,reuseaddr", "TCP:$NAME.$NS.svc:5672"]
      containers:
        - name: load
          image: $IMAGE
          imagePullPolicy: Never
          command: ["/usr/local/bin/tiermq-demo", "load", "--host", "127.0.0.1", "--port", "5672",
                    "--rate", "20", "--seconds", "240"]
          env:
            - name: TIERMQ_LOAD_VHOST
              valueFrom: {secretKeyRef: {name: $NAME-credentials, key: vhost}}
            - name: TIERMQ_LOAD_USERNAME
              valueFrom: {secretKeyRef: {name: $NAME-credentials, key: username}}
            - name: TIERMQ_LOAD_PASSWORD
              valueFrom: {secretKeyRef: {name: $NAME-credentials, key: password}}
YAML
kubectl -n "$NS" wait --for=condition=Ready pod -l job-name=tiermq-load --timeout=120s
CREDS_BEFORE=$(kubectl -n "$NS" get secret "$NAME-credentials" -o jsonpath='{.data}')

# Record every migration phase the instance passes through.
kubectl -n "$NS" get rmqi "$NAME" -w -o jsonpath='{.status.migrationPhase}{"\n"}' > "$WORK/phases" &
WATCH_PID=$!
sleep 20

convert() {
  local to=$1
  log "kubectl patch: spec.tier -> $to"
  : > "$WORK/phases.$to"
  kubectl -n "$NS" patch rmqi "$NAME" --type merge -p "{\"spec\":{\"tier\":\"$to\"}}"
  local start=$SECONDS
  until [[ "$(kubectl -n "$NS" get rmqi "$NAME" -o jsonpath='{.status.tier}/{.status.migrationPhase}')" == "$to/Stable" ]]; do
    (( SECONDS - start < 600 )) || { kubectl -n "$NS" describe rmqi "$NAME"; die "conversion to $to did not finish in 600s"; }
    kubectl -n "$NS" get rmqi "$NAME" --no-headers \
      -o custom-columns=PHASE:.status.migrationPhase,BACKLOG:.status.migration.remainingMessages,ETA:.status.migration.etaSeconds
    sleep 5
  done
  log "converted to $to in $(( SECONDS - start ))s"
  kubectl -n "$NS" get rmqi "$NAME" -o jsonpath='{.status.history[-1]}{"\n"}'
}

convert Dedicated
sleep 15
convert Shared

log "waiting for the load Job to finish and check its messages"
kubectl -n "$NS" wait --for=condition=Complete job/tiermq-load --timeout=420s || true
kubectl -n "$NS" logs job/tiermq-load -c load | tail -20
kubectl -n "$NS" logs job/tiermq-load -c load | grep -q '^OK: lost 0' || die "the load Job reports lost messages (see its log above)"

kill "$WATCH_PID" 2>/dev/null || true; WATCH_PID=
# Phases seen, consecutive duplicates removed.
SEEN=$(grep -v '^$' "$WORK/phases" | uniq | paste -sd' ')
log "phases seen: $SEEN"
EXPECTED="PreparingDestination DualWriteDualRead SingleWriteDualRead DrainingSource DestinationOnly Completed Stable"
[[ "$SEEN" == *"$EXPECTED"*"$EXPECTED"* ]] || die "phases not in order for both conversions (expected '$EXPECTED' twice)"

CREDS_AFTER=$(kubectl -n "$NS" get secret "$NAME-credentials" -o jsonpath='{.data}')
[[ "$CREDS_BEFORE" == "$CREDS_AFTER" ]] || die "the credentials Secret changed across the conversions"
if kubectl -n "$NS" get statefulset "$NAME-dedicated" >/dev/null 2>&1; then
  die "statefulset $NAME-dedicated still exists after the downgrade"
fi
kubectl get rmqi -A
kubectl -n "$NS" describe rmqi "$NAME" | sed -n '/^Events:/,$p'
log "PASS: 0 lost, phases in order twice, credentials unchanged, dedicated cluster removed"
