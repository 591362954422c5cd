{{/* Names, labels and shared pod settings. */}}

{{- define "sigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name; short enough for "-operator-metrics" to fit 63 characters. */}}
{{- define "sigil.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sigil.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sigil
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "sigil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sigil.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sigil.componentLabels" -}}
{{ include "sigil.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- /* The image of one component: (dict "ctx" . "image" .Values.issuer.image). */ -}}
{{- define "sigil.image" -}}
{{- $repository := .image.repository }}
{{- with .ctx.Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .ctx.Chart.AppVersion .ctx.Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Operator */}}

{{- define "sigil.operator.fullname" -}}
{{- printf "%s-operator" (include "sigil.fullname" .) }}
{{- end }}

{{- define "sigil.operator.serviceAccountName" -}}
{{- default (include "sigil.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- end }}

{{- define "sigil.operator.leaseName" -}}
{{- default (include "sigil.operator.fullname" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/* The namespace the operator reconciles in namespace mode. */}}
{{- define "sigil.operator.watchNamespace" -}}
{{- default .Release.Namespace .Values.operator.watchNamespace }}
{{- end }}

{{- define "sigil.operator.leaderElection" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) }}
{{- fail "operator.replicas > 1 needs operator.leaderElection.enabled=true: two operators reconciling at once could both generate a first key" }}
{{- end }}
{{- .Values.operator.leaderElection.enabled }}
{{- end }}

{{/* Issuer */}}

{{- define "sigil.issuer.fullname" -}}
{{- printf "%s-issuer" (include "sigil.fullname" .) }}
{{- end }}

{{/* The in-cluster URL follows issuer.tls and the Service port (named only
when it is not the scheme's default). */}}
{{- define "sigil.issuer.url" -}}
{{- $scheme := ternary "https" "http" .Values.issuer.tls.enabled }}
{{- $port := int .Values.issuer.service.port }}
{{- $suffix := ternary "" (printf ":%d" $port) (or (and .Values.issuer.tls.enabled (eq $port 443)) (and (not .Values.issuer.tls.enabled) (eq $port 80))) }}
{{- default (printf "%s://%s.%s.svc%s" $scheme (include "sigil.issuer.fullname" .) .Release.Namespace $suffix) .Values.issuer.url }}
{{- end }}

{{- define "sigil.issuer.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "sigil.issuer.fullname" .)) .Values.issuer.tls.secretName }}
{{- end }}

{{- define "sigil.issuer.signingKeyName" -}}
{{- default (include "sigil.issuer.fullname" .) .Values.issuer.signingKey.name }}
{{- end }}

{{/* Default object names per docs/contract.md. */}}
{{- define "sigil.issuer.secretName" -}}
{{- default (printf "%s-signing-key" (include "sigil.issuer.signingKeyName" .)) .Values.issuer.signingKey.secretName }}
{{- end }}

{{- define "sigil.issuer.jwksConfigMapName" -}}
{{- default (printf "%s-jwks" (include "sigil.issuer.signingKeyName" .)) .Values.issuer.signingKey.jwksConfigMapName }}
{{- end }}

{{- define "sigil.issuer.clientsSecretName" -}}
{{- default (printf "%s-clients" (include "sigil.issuer.fullname" .)) .Values.issuer.clients.existingSecret }}
{{- end }}

{{/* The pod-level settings both Deployments share; call with (dict "ctx" $ "values" .Values.operator). */}}
{{- define "sigil.podScheduling" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Injector (the operator's sidecar-injection webhook) */}}

{{- define "sigil.injector.fullname" -}}
{{- printf "%s-injector" (include "sigil.fullname" .) }}
{{- end }}

{{- define "sigil.injector.secretName" -}}
{{- printf "%s-tls" (include "sigil.injector.fullname" .) }}
{{- end }}

{{- define "sigil.injector.enabled" -}}
{{- if and .Values.injector.enabled (ne .Values.operator.scope "cluster") }}
{{- fail "injector.enabled needs operator.scope=cluster: the webhook is cluster-wide (a MutatingWebhookConfiguration) and injected Pods read JWKS copies that only a cluster-scope operator distributes" }}
{{- end }}
{{- if and .Values.injector.enabled .Values.injector.certManager.enabled (not .Values.injector.certManager.issuerRef.name) }}
{{- fail "injector.certManager.issuerRef.name is required: the cert-manager Issuer or ClusterIssuer that signs the webhook's certificate" }}
{{- end }}
{{- .Values.injector.enabled }}
{{- end }}

{{/* The SigningKey injected sidecars verify with unless a Pod names one. */}}
{{- define "sigil.injector.signingKey" -}}
{{- if .Values.injector.signingKey }}
{{- .Values.injector.signingKey }}
{{- else if .Values.issuer.enabled }}
{{- printf "%s/%s" .Release.Namespace (include "sigil.issuer.signingKeyName" .) }}
{{- end }}
{{- end }}
