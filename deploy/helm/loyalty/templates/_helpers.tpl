{{/*
Naming, labels and the per-service building blocks. Helpers that work on one service take
(dict "root" $ "name" $name), where $name is a key of .Values.services.
*/}}

{{- define "loyalty.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-wide prefix, as in `helm create`. */}}
{{- define "loyalty.fullname" -}}
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

{{- define "loyalty.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select every pod of the release; they never change between versions. */}}
{{- define "loyalty.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "loyalty.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* helm.sh standard labels shared by every object (add the component per object). */}}
{{- define "loyalty.labels" -}}
helm.sh/chart: {{ include "loyalty.chart" . }}
{{ include "loyalty.releaseSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "loyalty.name" . }}
{{- end }}

{{/* Stable selector of one service's pods: (dict "root" $ "name" $name). */}}
{{- define "loyalty.selectorLabels" -}}
{{ include "loyalty.releaseSelectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* All labels of one service's objects: (dict "root" $ "name" $name). */}}
{{- define "loyalty.serviceLabels" -}}
{{ include "loyalty.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/*
<fullname>-<suffix>, at most 63 characters: the prefix is shortened, never the suffix, so two
services can not end up with the same name. (dict "root" $ "suffix" "...")
*/}}
{{- define "loyalty.prefixed" -}}
{{- $room := sub 62 (len .suffix) | int }}
{{- printf "%s-%s" (include "loyalty.fullname" .root | trunc $room | trimSuffix "-") .suffix }}
{{- end }}

{{/* <fullname>-<service>: the name of the service's Deployment, Service, ServiceAccount, ... */}}
{{- define "loyalty.componentName" -}}
{{- include "loyalty.prefixed" (dict "root" .root "suffix" .name) }}
{{- end }}

{{- define "loyalty.headlessName" -}}
{{- include "loyalty.prefixed" (dict "root" .root "suffix" (printf "%s-headless" .name)) }}
{{- end }}

{{- define "loyalty.migrationJobName" -}}
{{- include "loyalty.prefixed" (dict "root" .root "suffix" (printf "%s-migrate" .name)) }}
{{- end }}

{{/* Environment-variable prefix of a service: profile -> PROFILE. */}}
{{- define "loyalty.envPrefix" -}}
{{- .name | upper | replace "-" "_" }}
{{- end }}

{{/*
The effective settings of one service: .Values.defaults overlaid key by key with
.Values.services.<name>, returned as JSON (use `include ... | fromJson`).
*/}}
{{- define "loyalty.settings" -}}
{{- $own := index .root.Values.services .name | default dict }}
{{- $merged := mergeOverwrite (deepCopy .root.Values.defaults) (deepCopy $own) }}
{{- if not (and $merged.ports $merged.ports.grpc $merged.ports.metrics) }}
{{- fail (printf "services.%s.ports.grpc and .metrics are required" .name) }}
{{- end }}
{{- toJson $merged }}
{{- end }}

{{/* Names of the enabled services, sorted, as JSON: {"names": [...]}. */}}
{{- define "loyalty.enabledServices" -}}
{{- $names := list }}
{{- range $name := keys .Values.services | sortAlpha }}
{{- $s := include "loyalty.settings" (dict "root" $ "name" $name) | fromJson }}
{{- if $s.enabled }}{{ $names = append $names $name }}{{ end }}
{{- end }}
{{- toJson (dict "names" $names) }}
{{- end }}

{{/* Image of a service: <registry>/<repository>-<name>:<tag>. */}}
{{- define "loyalty.image" -}}
{{- $img := .root.Values.image }}
{{- $own := .settings.image | default dict }}
{{- $repo := $own.repository | default (printf "%s-%s" $img.repository .name) }}
{{- if $img.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $img.registry) $repo }}{{ end }}
{{- printf "%s:%s" $repo ($own.tag | default $img.tag | default .root.Chart.AppVersion) }}
{{- end }}

{{/* Name of the Secret this chart creates (only when some value is given inline). */}}
{{- define "loyalty.secretName" -}}
{{- include "loyalty.fullname" . }}
{{- end }}

{{/* Name of the short-lived Secret and ServiceAccount of the migration hook Jobs. */}}
{{- define "loyalty.migrateName" -}}
{{- include "loyalty.prefixed" (dict "root" . "suffix" "migrate") }}
{{- end }}

{{/*
Where a service's DATABASE_URL comes from, as JSON {"name": ..., "key": ..., "inline": bool}.
Order: the service's own existingSecret, its own url, the global existingSecret, the global url.
"inline" means the chart stores it; the caller picks the Secret that holds inline values.
*/}}
{{- define "loyalty.databaseRef" -}}
{{- $db := .settings.database }}
{{- $g := .root.Values.database }}
{{- if $db.existingSecret }}
{{- toJson (dict "name" $db.existingSecret "key" ($db.existingSecretKey | default $g.existingSecretKey) "inline" false) }}
{{- else if $db.url }}
{{- toJson (dict "key" (printf "%s-database-url" .name) "inline" true "value" $db.url) }}
{{- else if $g.existingSecret }}
{{- toJson (dict "name" $g.existingSecret "key" $g.existingSecretKey "inline" false) }}
{{- else if $g.url }}
{{- toJson (dict "key" "database-url" "inline" true "value" $g.url) }}
{{- else }}
{{- fail (printf "services.%s has a database: set database.url or database.existingSecret (globally or under services.%s.database)" .name .name) }}
{{- end }}
{{- end }}

{{/*
Where a service's migration Job gets its DATABASE_URL, the owner's login that may change the schema,
as JSON like loyalty.databaseRef. Order: the service's own migrationExistingSecret, its own
migrationUrl; for a service with a database of its own, that database's URL; else the global
migrationExistingSecret, the global migrationUrl; last the service's own URL (one role for both).
*/}}
{{- define "loyalty.migrationDatabaseRef" -}}
{{- $db := .settings.database }}
{{- $g := .root.Values.database }}
{{- if $db.migrationExistingSecret }}
{{- toJson (dict "name" $db.migrationExistingSecret "key" ($db.migrationExistingSecretKey | default $g.migrationExistingSecretKey) "inline" false) }}
{{- else if $db.migrationUrl }}
{{- toJson (dict "key" (printf "%s-migration-database-url" .name) "inline" true "value" $db.migrationUrl) }}
{{- else if or $db.existingSecret $db.url }}
{{- include "loyalty.databaseRef" . }}
{{- else if $g.migrationExistingSecret }}
{{- toJson (dict "name" $g.migrationExistingSecret "key" $g.migrationExistingSecretKey "inline" false) }}
{{- else if $g.migrationUrl }}
{{- toJson (dict "key" "migration-database-url" "inline" true "value" $g.migrationUrl) }}
{{- else }}
{{- include "loyalty.databaseRef" . }}
{{- end }}
{{- end }}

{{/*
The role the service connects as, which its migration Job grants what a running service needs
(append-only tables: SELECT and INSERT only); "" grants nothing. A service with a database of its
own takes only its own serviceRole, as with the URLs.
*/}}
{{- define "loyalty.serviceRole" -}}
{{- $db := .settings.database }}
{{- if or $db.serviceRole $db.existingSecret $db.url }}
{{- $db.serviceRole }}
{{- else }}
{{- .root.Values.database.serviceRole }}
{{- end }}
{{- end }}

{{/*
Inline database URLs of all enabled services with a database, as Secret data lines: the services'
URLs for the release's Secret, or (migrationsOnly) the migration Jobs' URLs for the hook's Secret.
(dict "root" $ "migrationsOnly" bool)
*/}}
{{- define "loyalty.databaseSecretData" -}}
{{- $root := .root }}
{{- $data := dict }}
{{- range $name := (include "loyalty.enabledServices" $root | fromJson).names }}
{{- $s := include "loyalty.settings" (dict "root" $root "name" $name) | fromJson }}
{{- if and $s.database.enabled (or (not $.migrationsOnly) $s.migration.enabled) }}
{{- $ref := include (ternary "loyalty.migrationDatabaseRef" "loyalty.databaseRef" $.migrationsOnly) (dict "root" $root "name" $name "settings" $s) | fromJson }}
{{- if $ref.inline }}{{ $_ := set $data $ref.key $ref.value }}{{ end }}
{{- end }}
{{- end }}
{{- range $key := keys $data | sortAlpha }}
{{ $key }}: {{ index $data $key | b64enc | quote }}
{{- end }}
{{- end }}

{{/* A secretKeyRef env entry: (dict "env" NAME "secret" NAME "key" KEY). */}}
{{- define "loyalty.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}

{{/*
Environment of a service's container: (dict "root" $ "name" $name "settings" $s "migration" bool).
The migration Job gets the same plain settings but only DATABASE_URL among the secrets: the owner's
(loyalty.migrationDatabaseRef), read from the hook Secret (the release's own Secret does not exist yet
before the first install), and DATABASE_SERVICE_ROLE, the role to grant the service's rights to.
*/}}
{{- define "loyalty.env" -}}
{{- $root := .root }}
{{- $s := .settings }}
{{- $p := include "loyalty.envPrefix" . }}
{{- $secret := include "loyalty.secretName" $root }}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
- name: {{ $p }}_GRPC_PORT
  value: {{ $s.ports.grpc | quote }}
- name: {{ $p }}_METRICS_PORT
  value: {{ $s.ports.metrics | quote }}
{{- if $s.ports.http }}
- name: {{ $p }}_HTTP_PORT
  value: {{ $s.ports.http | quote }}
{{- with include "loyalty.httpPublicUrl" . }}
- name: {{ $p }}_HTTP_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
- name: {{ $p }}_LOG_LEVEL
  value: {{ $s.logLevel | quote }}
- name: {{ $p }}_GRACE_PERIOD_SECONDS
  value: {{ $s.graceSeconds | quote }}
- name: {{ $p }}_MAX_CONNECTION_AGE_SECONDS
  value: {{ $s.maxConnectionAgeSeconds | quote }}
{{- if $s.database.enabled }}
{{- $migration := .migration | default false }}
{{- $ref := include (ternary "loyalty.migrationDatabaseRef" "loyalty.databaseRef" $migration) . | fromJson }}
{{- $holder := ternary (include "loyalty.migrateName" $root) $secret $migration }}
{{ include "loyalty.secretEnv" (dict "env" (printf "%s_DATABASE_URL" $p) "secret" ($ref.name | default $holder) "key" $ref.key) }}
{{- with (and $migration (include "loyalty.serviceRole" .)) }}
- name: {{ $p }}_DATABASE_SERVICE_ROLE
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if not .migration }}
{{- $r := $root.Values.redis }}
{{- if not (or $r.existingSecret $r.url) }}
{{- fail "set redis.url or redis.existingSecret" }}
{{- end }}
{{ include "loyalty.secretEnv" (dict "env" (printf "%s_REDIS_URL" $p) "secret" ($r.existingSecret | default $secret) "key" (ternary $r.existingSecretKey "redis-url" (not (empty $r.existingSecret)))) }}
{{- $t := $root.Values.internalToken }}
{{ include "loyalty.secretEnv" (dict "env" (printf "%s_INTERNAL_TOKEN" $p) "secret" ($t.existingSecret | default $secret) "key" (ternary $t.existingSecretKey "internal-token" (not (empty $t.existingSecret)))) }}
{{- range $k := keys ($s.secretEnv | default dict) | sortAlpha }}
{{- $ref := index $s.secretEnv $k }}
{{ include "loyalty.secretEnv" (dict "env" $k "secret" $ref.secret "key" $ref.key) }}
{{- end }}
{{- /* dns:/// targets of every service this one may call (it is in their callers). */}}
{{- range $callee := (include "loyalty.enabledServices" $root | fromJson).names }}
{{- $c := include "loyalty.settings" (dict "root" $root "name" $callee) | fromJson }}
{{- if and (ne $callee $.name) (has $.name $c.callers) }}
- name: {{ $p }}_{{ include "loyalty.envPrefix" (dict "name" $callee) }}_TARGET
  value: {{ printf "dns:///%s.%s.svc.%s:%v" (include "loyalty.headlessName" (dict "root" $root "name" $callee)) $root.Release.Namespace $root.Values.clusterDomain $c.ports.grpc | quote }}
{{- end }}
{{- end }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ .name | quote }}
{{- $attrs := dict "service.namespace" (include "loyalty.name" $root) "service.version" (($s.image | default dict).tag | default $root.Values.image.tag | default $root.Chart.AppVersion) }}
{{- $attrs = mergeOverwrite $attrs ($root.Values.otel.resourceAttributes | default dict) }}
{{- $pairs := list "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" "k8s.node.name=$(NODE_NAME)" }}
{{- range $k := keys $attrs | sortAlpha }}{{ $pairs = append $pairs (printf "%s=%s" $k (index $attrs $k)) }}{{ end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $pairs | quote }}
{{- with $root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- range $k := keys ($s.env | default dict) | sortAlpha }}
- name: {{ $k }}
  value: {{ index $s.env $k | toString | quote }}
{{- end }}
{{- end }}

{{/*
Where readers reach a service's HTTP port: its http.publicUrl, else its Ingress's
http(s)://<host><path> (https with a TLS Secret), else "". (dict "root" $ "name" $name "settings" $s)
*/}}
{{- define "loyalty.httpPublicUrl" -}}
{{- $ingress := .settings.http.ingress }}
{{- if .settings.http.publicUrl }}
{{- trimSuffix "/" .settings.http.publicUrl }}
{{- else if and $ingress.enabled $ingress.host }}
{{- printf "%s://%s%s" (ternary "https" "http" (not (empty $ingress.tlsSecretName))) $ingress.host (trimSuffix "/" $ingress.path) }}
{{- end }}
{{- end }}

{{/*
A NetworkPolicy peer from {namespaceSelector, podSelector} values (networkPolicy.monitoring,
networkPolicy.ingressController): pods matching podSelector in the namespaces matching
namespaceSelector (empty: every namespace).
*/}}
{{- define "loyalty.peer" -}}
- namespaceSelector:
    {{- with .namespaceSelector }}
    matchLabels:
      {{- toYaml . | nindent 6 }}
    {{- else }} {}
    {{- end }}
  {{- with .podSelector }}
  podSelector:
    matchLabels:
      {{- toYaml . | nindent 6 }}
  {{- end }}
{{- end }}

{{/* Restricted pod security context (Pod Security Standards "restricted"). */}}
{{- define "loyalty.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "loyalty.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Pod spec parts shared by a service's Deployment and its migration Job:
(dict "root" $ "name" $name "settings" $s "migration" bool). Renders from `containers:` on.
*/}}
{{- define "loyalty.podSpec" -}}
{{- $root := .root }}
{{- $s := .settings }}
automountServiceAccountToken: false
securityContext:
  {{- include "loyalty.podSecurityContext" . | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with $s.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
containers:
  - name: {{ .name }}
    image: {{ include "loyalty.image" . | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args: [{{ ternary "migrate" "serve" (.migration | default false) | quote }}]
    env:
      {{- include "loyalty.env" . | nindent 6 }}
    securityContext:
      {{- include "loyalty.containerSecurityContext" . | nindent 6 }}
    resources:
      {{- toYaml $s.resources | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
    {{- if not .migration }}
    ports:
      - name: grpc
        containerPort: {{ int $s.ports.grpc }}
        protocol: TCP
      {{- with $s.ports.http }}
      - name: http
        containerPort: {{ int . }}
        protocol: TCP
      {{- end }}
      - name: metrics
        containerPort: {{ int $s.ports.metrics }}
        protocol: TCP
    {{- /*
    Native gRPC probes on the numeric port. Liveness asks the health service "liveness", SERVING
    while the process runs: a database outage or a drain must not get the pod restarted. Startup and
    readiness ask "" (the whole server): NOT_SERVING until PostgreSQL answers, while it does not, and
    from the first moment of a shutdown.
    */}}
    {{- range $kind, $probe := dict "startupProbe" $s.probes.startup "readinessProbe" $s.probes.readiness "livenessProbe" $s.probes.liveness }}
    {{ $kind }}:
      grpc:
        port: {{ int $s.ports.grpc }}
        service: {{ ternary "liveness" "" (eq $kind "livenessProbe") | quote }}
      {{- toYaml $probe | nindent 6 }}
    {{- end }}
    {{- end }}
{{- end }}

{{/*
Checksum of the values behind the chart's Secret, so pods restart when a URL or token changes
(a generated token is kept across upgrades and so does not count).
*/}}
{{- define "loyalty.secretChecksum" -}}
{{- $dbs := dict }}
{{- range $name, $own := .Values.services }}
{{- $_ := set $dbs $name (($own | default dict).database | default dict) }}
{{- end }}
{{- list .Values.database .Values.redis .Values.internalToken .Values.defaults.database $dbs | toJson | sha256sum }}
{{- end }}
