{{/* Names, labels and the pieces every Introspect container shares. */}}

{{- define "introspect.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A model's name as a DNS label: llama2-7b stays, anything else is lowered and dashed. */}}
{{- define "introspect.modelSlug" -}}
{{- regexReplaceAll "[^a-z0-9-]+" (lower .) "-" | trunc 20 | trimAll "-" -}}
{{- end -}}

{{- define "introspect.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: introspect
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "scorer"). */}}
{{- define "introspect.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: repository@digest where a digest pins it (the tag is then
     ignored), repository:tag otherwise. Call with (dict "image" <values> "tag" <default tag>). */}}
{{- define "introspect.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .tag) -}}
{{- end -}}
{{- end -}}

{{- define "introspect.image" -}}
{{- include "introspect.imageRef" (dict "image" .Values.image "tag" .Chart.AppVersion) -}}
{{- end -}}

{{- define "introspect.natsSecret" -}}
{{- .Values.nats.auth.existingSecret | default (printf "%s-nats-auth" (include "introspect.fullname" .)) -}}
{{- end -}}

{{- define "introspect.apiTokenSecret" -}}
{{- .Values.aggregator.apiToken.existingSecret | default (printf "%s-api-token" (include "introspect.fullname" .)) -}}
{{- end -}}

{{/* The aggregator API's bearer token, for the aggregator and for whoever asks it. */}}
{{- define "introspect.apiTokenEnv" -}}
- name: INTROSPECT_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "introspect.apiTokenSecret" . }}
      key: {{ .Values.aggregator.apiToken.key }}
{{- end -}}

{{- define "introspect.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s-nats:4222" (include "introspect.fullname" .) -}}
{{- else -}}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{- define "introspect.hfTokenSecret" -}}
{{- .Values.hfToken.existingSecret | default (printf "%s-hf-token" (include "introspect.fullname" .)) -}}
{{- end -}}

{{- define "introspect.hasHfToken" -}}
{{- if or .Values.hfToken.existingSecret .Values.hfToken.value -}}true{{- end -}}
{{- end -}}

{{/* Settings every service reads (services/runtime/settings.py): NATS and the metrics port.
     Call with (dict "root" $ "role" "scorer"): each role connects as its own NATS user, whose
     permissions in nats.conf cover only the subjects that role uses. */}}
{{- define "introspect.env" -}}
- name: INTROSPECT_NATS_URL
  value: {{ include "introspect.natsUrl" .root | quote }}
- name: INTROSPECT_NATS_USER
  value: {{ .role | quote }}
- name: INTROSPECT_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "introspect.natsSecret" .root }}
      key: {{ .role }}-password
- name: INTROSPECT_NATS_INBOX_PREFIX  # replies to this role alone: nats.conf lets it read only these
  value: _INBOX_{{ .role }}
- name: INTROSPECT_STREAM_REPLICAS  # each stream on as many NATS servers as there are
  value: {{ .root.Values.nats.replicas | quote }}
- name: INTROSPECT_METRICS_HOST  # the probes, Prometheus and the API's clients reach the pod's address
  value: "0.0.0.0"
- name: INTROSPECT_METRICS_PORT
  value: "9090"
- name: INTROSPECT_PARTITIONS
  value: {{ .root.Values.gateway.partitions | quote }}
- name: XDG_CACHE_HOME  # the root filesystem is read-only: any library cache goes to /tmp
  value: /tmp/.cache
{{- end -}}

{{/* The container fields every Introspect service shares. */}}
{{- define "introspect.container" -}}
image: {{ include "introspect.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
ports:
  - name: metrics
    containerPort: 9090
readinessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 5
livenessProbe:
  httpGet:
    path: /metrics
    port: metrics
  initialDelaySeconds: 30
  periodSeconds: 20
  failureThreshold: 6
{{- end -}}

{{/* Pod fields every Introspect service shares. */}}
{{- define "introspect.podSpec" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
terminationGracePeriodSeconds: 30
{{- end -}}

{{- define "introspect.podAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: "9090"
prometheus.io/path: /metrics
{{- end -}}

{{/* The served models' names, comma-separated, as jobs name them. */}}
{{- define "introspect.modelNames" -}}
{{- $names := list -}}
{{- range .Values.models -}}{{- $names = append $names .name -}}{{- end -}}
{{- join "," $names -}}
{{- end -}}
