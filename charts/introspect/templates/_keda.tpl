{{/* Scaling on the work waiting, with KEDA (values: keda). Which workloads scale, on which
     consumer: the durable pull consumers are those of proto/subjects.py (consumer_for). The
     gateways (a cache partition each) and the aggregator (the one writer) never do. */}}

{{/* The workloads KEDA scales, as JSON: [{component, stream, consumer, autoscaling}]. */}}
{{- define "introspect.kedaWorkloads" -}}
{{- $workloads := list -}}
{{- if .Values.keda.enabled -}}
{{- if .Values.scorer.autoscaling.enabled -}}
{{- $workloads = append $workloads (dict "component" "scorer" "stream" "INTROSPECT_SCORE" "consumer" "scorer" "autoscaling" .Values.scorer.autoscaling) -}}
{{- end -}}
{{- if .Values.producer.autoscaling.enabled -}}
{{- $workloads = append $workloads (dict "component" "producer" "stream" "INTROSPECT_JOBS" "consumer" "producer" "autoscaling" .Values.producer.autoscaling) -}}
{{- end -}}
{{- end -}}
{{- toJson $workloads -}}
{{- end -}}

{{/* Non-empty when KEDA owns the producer's replica count. */}}
{{- define "introspect.producerScaled" -}}
{{- if .Values.producer.autoscaling.enabled -}}
{{- if not .Values.keda.enabled -}}
{{- fail "producer.autoscaling.enabled needs keda.enabled: the producer scales on the jobs waiting, which only KEDA reads" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* NATS's monitoring endpoint as KEDA's operator reaches it, host:port: the release's
     headless Service (a DNS name per pod, which KEDA needs to find a consumer's leader
     among 3 servers), or keda.natsMonitoringEndpoint. */}}
{{- define "introspect.kedaNatsEndpoint" -}}
{{- if .Values.keda.natsMonitoringEndpoint -}}
{{- .Values.keda.natsMonitoringEndpoint -}}
{{- else if .Values.nats.enabled -}}
{{- printf "%s-nats-headless.%s.svc:8222" (include "introspect.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- fail "keda.natsMonitoringEndpoint: with nats.enabled false, say where KEDA reads your NATS server's monitoring endpoint (host:port)" -}}
{{- end -}}
{{- end -}}
