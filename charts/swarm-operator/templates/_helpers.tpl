{{- define "swarm-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "swarm-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "swarm-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "swarm-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "swarm-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "swarm-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "swarm-operator.serviceAccountName" -}}
{{- default (include "swarm-operator.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "swarm-operator.watchNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}

{{/* TCP port of telemetry.otlpEndpoint: the URL's own, else the scheme's default. */}}
{{- define "swarm-operator.otlpPort" -}}
{{- $url := urlParse .Values.telemetry.otlpEndpoint }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- if $port }}{{ $port }}{{ else if eq $url.scheme "https" }}443{{ else }}80{{ end }}
{{- end }}

{{- define "swarm-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{/* What the operator does in the namespaces it manages: exactly the calls its controllers make. */}}
{{- define "swarm-operator.managedRules" -}}
- apiGroups: [rlswarm.dev]
  resources: [swarms]
  verbs: [get, list, watch, patch]
- apiGroups: [rlswarm.dev]
  resources: [swarms/status]
  verbs: [patch]
- apiGroups: [rlswarm.dev]
  resources: [swarmmembers]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [rlswarm.dev]
  resources: [swarmmembers/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, delete]
# The model download's progress, from the last lines of its init container's log.
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch, create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
