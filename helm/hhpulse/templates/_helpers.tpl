{{/* Return the chart name. */}}
{{- define "hhpulse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Return the fully qualified app name, truncated to 63 characters. */}}
{{- define "hhpulse.fullname" -}}
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

{{/* Return the chart label value. */}}
{{- define "hhpulse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Return the selector labels. */}}
{{- define "hhpulse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hhpulse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Return the standard labels. */}}
{{- define "hhpulse.model.labels" -}}
helm.sh/chart: {{ include "hhpulse.chart" . }}
{{ include "hhpulse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Return the pipeline steps' ServiceAccount name. */}}
{{- define "hhpulse.serviceAccountName" -}}
{{- printf "%s-pipeline" (include "hhpulse.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Return the predictor's ServiceAccount name. */}}
{{- define "hhpulse.predictorServiceAccountName" -}}
{{- printf "%s-predictor" (include "hhpulse.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Return the credentials Secret name. */}}
{{- define "hhpulse.secretName" -}}
{{- if .Values.store.createSecret }}{{ printf "%s-s3" (include "hhpulse.fullname" .) }}{{ else }}{{ required "store.existingSecret is required (a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)" .Values.store.existingSecret }}{{ end }}
{{- end }}

{{/* Return an image reference. */}}
{{- define "hhpulse.image" -}}
{{- $tag := default .root.Chart.AppVersion .tag }}
{{- printf "%s/%s:%s" (.root.Values.image.registry | trimSuffix "/") .name $tag }}
{{- end }}

{{/* Return the S3 endpoint without its scheme (KServe's s3-endpoint annotation). */}}
{{- define "hhpulse.s3Host" -}}
{{- .Values.store.endpoint | trimPrefix "http://" | trimPrefix "https://" }}
{{- end }}

{{/* Return the restricted pod security context. */}}
{{- define "hhpulse.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Return the restricted container security context. */}}
{{- define "hhpulse.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Return the log sink's name (its Deployment, Service and ServiceAccount). */}}
{{- define "hhpulse.logsinkName" -}}
{{- printf "%s-logsink" (include "hhpulse.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Return where KServe's logger posts: logger.url, or the chart's own sink Service. */}}
{{- define "hhpulse.loggerUrl" -}}
{{- if .Values.logger.url }}{{ .Values.logger.url }}{{ else }}{{ printf "http://%s.%s.svc.cluster.local" (include "hhpulse.logsinkName" .) .Release.Namespace }}{{ end }}
{{- end }}
