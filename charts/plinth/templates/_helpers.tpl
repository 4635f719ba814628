{{/* Names, labels and the image, shared by every template. */}}

{{- define "plinth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* `<release>-<chart>`, or the release name alone when it already holds the chart name. */}}
{{- define "plinth.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "plinth.operator.fullname" -}}
{{- printf "%s-operator" (include "plinth.fullname" .) -}}
{{- end -}}

{{- define "plinth.agent.fullname" -}}
{{- printf "%s-agent" (include "plinth.fullname" .) -}}
{{- end -}}

{{- define "plinth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "plinth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: plinth
{{- end -}}

{{/* Selector labels never change after install. */}}
{{- define "plinth.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plinth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "plinth.agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plinth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "plinth.operator.labels" -}}
{{ include "plinth.labels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "plinth.agent.labels" -}}
{{ include "plinth.labels" . }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "plinth.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the operator replicas elect a leader. */}}
{{- define "plinth.operator.leaderElection" -}}
{{- $le := .Values.operator.leaderElection -}}
{{- if eq (toString $le) "auto" -}}
{{- gt (int .Values.operator.replicas) 1 -}}
{{- else -}}
{{- $le -}}
{{- end -}}
{{- end -}}

{{/* The name of the leader Lease; the operator's Role may update only this one. */}}
{{- define "plinth.operator.leaseName" -}}
{{- include "plinth.operator.fullname" . -}}
{{- end -}}

{{/* policy/v1 from Kubernetes 1.21, policy/v1beta1 before. */}}
{{- define "plinth.pdb.apiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}
