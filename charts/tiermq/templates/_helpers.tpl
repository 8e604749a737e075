{{/* Chart name, overridable. */}}
{{- define "tiermq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release already contains it. */}}
{{- define "tiermq.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tiermq.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "tiermq.labels" -}}
helm.sh/chart: {{ include "tiermq.chart" . }}
{{ include "tiermq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tiermq
{{- end }}

{{/* Labels that select the operator pods. */}}
{{- define "tiermq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tiermq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator pods' selector labels as "k=v,k=v" (the brokers' NetworkPolicies admit them to the management API). */}}
{{- define "tiermq.selectorLabelsFlag" -}}
{{- $labels := list -}}
{{- range $k, $v := (include "tiermq.selectorLabels" . | fromYaml) -}}
{{- $labels = append $labels (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $labels -}}
{{- end }}

{{/* Where /healthz and /readyz listen: probes.bindAddress, else metrics.bindAddress unless that is a loopback address (the kubelet must reach the probes), else 0.0.0.0. */}}
{{- define "tiermq.probeBindAddress" -}}
{{- $metrics := default "0.0.0.0" .Values.metrics.bindAddress -}}
{{- if .Values.probes.bindAddress -}}
{{- .Values.probes.bindAddress -}}
{{- else if or (hasPrefix "127." $metrics) (eq $metrics "localhost") (eq $metrics "::1") -}}
0.0.0.0
{{- else -}}
{{- $metrics -}}
{{- end -}}
{{- end }}

{{- define "tiermq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tiermq.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tiermq.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
