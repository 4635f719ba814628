{{- define "web.selector" -}}
app.kubernetes.io/name: {{ .Values.name | quote }}
app.kubernetes.io/instance: {{ .Values.name | quote }}
{{- end }}
{{- define "web.labels" -}}
{{ include "web.selector" . }}
app.kubernetes.io/managed-by: plinth
app.kubernetes.io/part-of: {{ .Values.name | quote }}
plinth.dev/application: {{ .Values.name | quote }}
plinth.dev/blueprint: web
{{- end }}
