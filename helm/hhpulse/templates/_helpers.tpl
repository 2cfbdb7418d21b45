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

{{/* Return the pipeline runs' ServiceAccount name: pipeline.runServiceAccount (e.g. Kubeflow's
     default-editor), or the chart's own, bound to the least-privilege Role in role.yaml. */}}
{{- define "hhpulse.serviceAccountName" -}}
{{- if .Values.pipeline.runServiceAccount }}{{ .Values.pipeline.runServiceAccount }}{{ else }}{{ printf "%s-pipeline" (include "hhpulse.fullname" .) | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{/* Return the setup Job's ServiceAccount name (it calls the KFP API, never the Kubernetes API). */}}
{{- define "hhpulse.setupServiceAccountName" -}}
{{- printf "%s-setup" (include "hhpulse.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Return the predictor's ServiceAccount name. */}}
{{- define "hhpulse.predictorServiceAccountName" -}}
{{- printf "%s-predictor" (include "hhpulse.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Return the credentials Secret name. */}}
{{- define "hhpulse.secretName" -}}
{{- if .Values.store.createSecret }}{{ printf "%s-s3" (include "hhpulse.fullname" .) }}{{ else }}{{ required "store.existingSecret is required (a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)" .Values.store.existingSecret }}{{ end }}
{{- end }}

{{/* Return an image reference: [registry/]name:tag (no registry: the local name, as `make images` tags it). */}}
{{- define "hhpulse.image" -}}
{{- $tag := default .root.Chart.AppVersion .tag }}
{{- if .root.Values.image.registry }}
{{- printf "%s/%s:%s" (.root.Values.image.registry | trimSuffix "/") .name $tag }}
{{- else }}
{{- printf "%s:%s" .name $tag }}
{{- end }}
{{- end }}

{{/* Return the pods' imagePullSecrets, when image.pullSecrets names any. */}}
{{- define "hhpulse.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Return the S3 endpoint without its scheme (KServe's s3-endpoint annotation: every KServe
     release reads a bare host, with s3-usehttps saying the scheme). */}}
{{- define "hhpulse.s3Host" -}}
{{- .Values.store.endpoint | trimPrefix "http://" | trimPrefix "https://" }}
{{- end }}

{{/* Return KServe's s3-usehttps for the endpoint's scheme: "1" for https://, else "0". */}}
{{- define "hhpulse.s3UseHttps" -}}
{{- ternary "1" "0" (hasPrefix "https://" .Values.store.endpoint) }}
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
