{{/* Return the labels KServe puts on the predictor pods of this release's InferenceService, whatever
     else they carry (kserve pkg/controller/v1beta1/inferenceservice/components/predictor.go,
     buildObjectMeta: serving.kserve.io/inferenceservice=<name> and component=predictor, set last so
     that no user label overrides them; the canary's pods carry the same). */}}
{{- define "hhpulse.predictorPodLabels" -}}
serving.kserve.io/inferenceservice: {{ include "hhpulse.fullname" . }}
component: predictor
{{- end }}

{{/* Return the predictor pod's port that inference traffic reaches: with KServe's logger the
     predictor Service targets the agent (9081) in front of kserve-container (8080)
     (kserve pkg/controller/v1beta1/inferenceservice/reconcilers/service/service_reconciler.go). */}}
{{- define "hhpulse.predictorTrafficPort" -}}
{{- if .Values.logger.enabled }}9081{{ else }}8080{{ end }}
{{- end }}
