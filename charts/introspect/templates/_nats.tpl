{{/* NATS users: one per role, each limited to the subjects that role uses. The subjects,
     streams and consumers are those of proto/subjects.py; the JetStream API subjects are
     the ones nats-py sends for what services/runtime/bus.py, worker.py and
     services/client.py do (tests/chart/test_chart_wiring.py runs them all against these
     permissions). */}}

{{/* The roles, each a NATS user of that name whose password is the Secret's key
     <role>-password. `submitter` is a person or pod that submits jobs and follows them;
     `operator` may also replay dead letters (to any stage) and delete them. */}}
{{- define "introspect.natsRoles" -}}
{{- toJson (list "producer" "scorer" "gateway" "aggregator" "submitter" "operator") -}}
{{- end -}}

{{/* Every key the NATS Secret holds: each role's password, and the routes' password of a
     NATS cluster (nats.replicas: 3). */}}
{{- define "introspect.natsSecretKeys" -}}
{{- $keys := list -}}
{{- range (include "introspect.natsRoles" . | fromJsonArray) -}}
{{- $keys = append $keys (printf "%s-password" .) -}}
{{- end -}}
{{- toJson (append $keys "cluster-password") -}}
{{- end -}}

{{/* role -> {publish: [subjects], subscribe: [subjects]}, as JSON. */}}
{{- define "introspect.natsPermissions" -}}
{{- $streams := list "INTROSPECT_JOBS" "INTROSPECT_SCORE" "INTROSPECT_GENERATE" "INTROSPECT_RESULTS" "INTROSPECT_EVENTS" "INTROSPECT_DEAD" "INTROSPECT_PROGRESS" -}}
{{- /* Every client declares every stream when it connects (Bus.open): creating one that
       exists with the same config is a no-op; one whose replica count differs is read
       (INFO) and declared with it. The services may also update a stream whose config a
       new version changed; people may not. */ -}}
{{- $declare := list -}}
{{- $update := list -}}
{{- range $streams -}}
{{- $declare = concat $declare (list (printf "$JS.API.STREAM.CREATE.%s" .) (printf "$JS.API.STREAM.INFO.%s" .)) -}}
{{- $update = append $update (printf "$JS.API.STREAM.UPDATE.%s" .) -}}
{{- end -}}
{{- /* The durable pull consumers each service reads: [stream, durable]. A gateway's is
       gateway-<model as a subject token>-<partition> (proto.subjects.consumer_for). */ -}}
{{- $gatewayConsumers := list -}}
{{- range .Values.models -}}
{{- $route := regexReplaceAll "[^A-Za-z0-9_-]" .name "_" -}}
{{- range $partition := until (int $.Values.gateway.partitions) -}}
{{- $gatewayConsumers = append $gatewayConsumers (list "INTROSPECT_GENERATE" (printf "gateway-%s-%d" $route $partition)) -}}
{{- end -}}
{{- end -}}
{{- $consumers := dict
      "producer" (list (list "INTROSPECT_JOBS" "producer"))
      "scorer" (list (list "INTROSPECT_SCORE" "scorer"))
      "gateway" $gatewayConsumers
      "aggregator" (list (list "INTROSPECT_RESULTS" "aggregator")) -}}
{{- /* What each service publishes: its output subjects and its dead letters. The producer
       also keeps each job's progress, and reads the last one back to go on from there. A
       gateway takes an observation's next step (its next question, or its scored result),
       and claims its partition in the INTROSPECT_OWNERS key-value bucket
       (services/runtime/ownership.py). */ -}}
{{- $outputs := dict
      "producer" (list "introspect.score.observation" "introspect.results.manifest" "introspect.events" "introspect.dead.producer"
                       "introspect.progress.*" "$JS.API.STREAM.MSG.GET.INTROSPECT_PROGRESS")
      "scorer" (list "introspect.generate.*.*" "introspect.results.record" "introspect.dead.scorer")
      "gateway" (list "introspect.generate.*.*" "introspect.results.record" "introspect.dead.gateway"
                      "$KV.INTROSPECT_OWNERS.>" "$JS.API.STREAM.INFO.KV_INTROSPECT_OWNERS"
                      "$JS.API.STREAM.CREATE.KV_INTROSPECT_OWNERS" "$JS.API.STREAM.MSG.GET.KV_INTROSPECT_OWNERS"
                      "$JS.API.DIRECT.GET.KV_INTROSPECT_OWNERS.>")
      "aggregator" (list "introspect.events" "introspect.dead.aggregator") -}}
{{- $permissions := dict -}}
{{- range $service, $published := $outputs -}}
{{- $publish := concat $declare $update $published -}}
{{- range (get $consumers $service) -}}
{{- $stream := index . 0 -}}
{{- $durable := index . 1 -}}
{{- $publish = concat $publish (list
      (printf "$JS.API.CONSUMER.INFO.%s.%s" $stream $durable)
      (printf "$JS.API.CONSUMER.DURABLE.CREATE.%s.%s" $stream $durable)
      (printf "$JS.API.CONSUMER.CREATE.%s.%s" $stream $durable)
      (printf "$JS.API.CONSUMER.CREATE.%s.%s.>" $stream $durable)
      (printf "$JS.API.CONSUMER.MSG.NEXT.%s.%s" $stream $durable)
      (printf "$JS.ACK.%s.%s.>" $stream $durable)) -}}
{{- end -}}
{{- /* Each role reads replies on its own inbox prefix (INTROSPECT_NATS_INBOX_PREFIX): the
       pulled messages and answers of one role are not readable by another. */ -}}
{{- $_ := set $permissions $service (dict "publish" $publish "subscribe" (list (printf "_INBOX_%s.>" $service))) -}}
{{- end -}}
{{- /* A submitter publishes jobs, follows job events (an ordered consumer on the events
       stream, found by its subject) and dead letters as they are written, and lists the
       dead letters kept. */ -}}
{{- $submitter := concat $declare (list
      "introspect.jobs"
      "$JS.API.STREAM.NAMES"
      "$JS.API.CONSUMER.CREATE.INTROSPECT_EVENTS"
      "$JS.API.CONSUMER.CREATE.INTROSPECT_EVENTS.>"
      "$JS.FC.INTROSPECT_EVENTS.>"
      "$JS.API.STREAM.INFO.INTROSPECT_DEAD"
      "$JS.API.STREAM.MSG.GET.INTROSPECT_DEAD") -}}
{{- $_ := set $permissions "submitter" (dict "publish" $submitter "subscribe" (list "_INBOX_submitter.>" "introspect.dead.*")) -}}
{{- /* An operator replays a dead letter to the subject it came from (any stage), then
       deletes it from the dead-letter stream. */ -}}
{{- $operator := concat $submitter (list "introspect.>" "$JS.API.STREAM.MSG.DELETE.INTROSPECT_DEAD") -}}
{{- $_ := set $permissions "operator" (dict "publish" $operator "subscribe" (list "_INBOX_operator.>" "introspect.dead.*")) -}}
{{- toJson $permissions -}}
{{- end -}}

{{/* nats.conf. Passwords are never written here: $<ROLE>_PASSWORD and $CLUSTER_PASSWORD
     are environment variables of the NATS container, from the Secret. */}}
{{- define "introspect.natsConf" -}}
{{- $fullname := include "introspect.fullname" . -}}
port: 4222
http_port: 8222
server_name: $POD_NAME
max_payload: 1MB
jetstream {
  store_dir: /data
  max_memory_store: {{ .Values.nats.jetstream.maxMemory }}
  max_file_store: {{ .Values.nats.jetstream.storage }}
  {{- with .Values.nats.jetstream.syncInterval }}
  # How often written messages are forced to disk (fsync); `always`: on every write.
  sync_interval: {{ . | quote }}
  {{- end }}
}
{{- if gt (int .Values.nats.replicas) 1 }}
cluster {
  name: {{ $fullname }}-nats
  port: 6222
  # Routes must authenticate. nats.conf expands a variable only as a whole value, so each
  # route URL (with the password) is put together by Kubernetes in $ROUTE_<n>.
  authorization {
    user: route
    password: $CLUSTER_PASSWORD
  }
  routes: [
    {{- range $index := until (int .Values.nats.replicas) }}
    $ROUTE_{{ $index }}
    {{- end }}
  ]
}
{{- end }}
authorization {
  users: [
    {{- range $role, $permissions := (include "introspect.natsPermissions" . | fromJson) }}
    {
      user: {{ $role }}
      password: ${{ upper $role }}_PASSWORD
      permissions: {
        publish: {allow: [
          {{- range $permissions.publish }}
          {{ . | quote }}
          {{- end }}
        ]}
        subscribe: {allow: [
          {{- range $permissions.subscribe }}
          {{ . | quote }}
          {{- end }}
        ]}
      }
    }
    {{- end }}
  ]
}
{{- end -}}
