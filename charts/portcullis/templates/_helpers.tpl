{{/* Names and labels. */}}
{{- define "portcullis.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Whether this release deploys Portcullis itself (not in sidecar mode). */}}
{{- define "portcullis.deploys" -}}
{{- if ne .Values.mode "sidecar" -}}true{{- end -}}
{{- end -}}

{{- define "portcullis.secretName" -}}
{{- default (printf "%s-secrets" (include "portcullis.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "portcullis.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Whether the admin listener is on: a sidecar has it only with its own Secret. */}}
{{- define "portcullis.admin" -}}
{{- if and .Values.admin.enabled (or (include "portcullis.deploys" .) .Values.admin.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "portcullis.adminSecretName" -}}
{{- default (printf "%s-admin" (include "portcullis.fullname" .)) .Values.admin.existingSecret -}}
{{- end -}}

{{/* The SQLite directory lives on a volume unless PostgreSQL is configured. */}}
{{- define "portcullis.scimSqlite" -}}
{{- if and .Values.scim.enabled (not .Values.secrets.scimDatabaseUrl) (not .Values.secrets.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/*
The configuration mapping (values.config plus what the mode and the other values imply)
as environment variables: nested keys joined with "__", lists comma-joined, empty values
left out. Portcullis reads these exactly as it reads its YAML file.
*/}}
{{- define "portcullis.flatEnv" -}}
{{- range $key, $value := .value }}
{{- $name := printf "%s%s" $.prefix (upper $key) }}
{{- if kindIs "map" $value }}
{{- include "portcullis.flatEnv" (dict "prefix" (printf "%s__" $name) "value" $value) }}
{{- else if kindIs "slice" $value }}
{{- if and $value (kindIs "map" (first $value)) }}
{{- /* A list of mappings (routes) travels as JSON, which Portcullis reads as YAML. */}}
- name: {{ $name }}
  value: {{ toJson $value | quote }}
{{- else if $value }}
- name: {{ $name }}
  value: {{ join "," $value | quote }}
{{- end }}
{{- else if ne (toString $value) "" }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "portcullis.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if eq .Values.mode "forward-auth" -}}
{{- $_ := set $config "forward_auth_only" true -}}
{{- $_ := unset $config "upstream_url" -}}
{{- end -}}
{{- $_ := set $config "listen_addr" (printf "0.0.0.0:%d" (int .Values.containerPort)) -}}
{{- if include "portcullis.admin" . -}}
{{- $_ := set $config "admin" (dict "listen_addr" (printf "0.0.0.0:%d" (int .Values.admin.port))) -}}
{{- end -}}
{{- if .Values.extAuthz.enabled -}}
{{- $_ := set $config "ext_authz" (dict "listen_addr" (printf "0.0.0.0:%d" (int .Values.extAuthz.port))) -}}
{{- end -}}
{{- if .Values.extraCaBundle.configMap -}}
{{- $outbound := default (dict) $config.outbound -}}
{{- $_ := set $outbound "ca_file" (printf "/etc/portcullis/ca/%s" .Values.extraCaBundle.key) -}}
{{- $_ := set $config "outbound" $outbound -}}
{{- end -}}
{{- if .Values.identityJwt.secretName -}}
{{- $jwt := default (dict) $config.identity_jwt -}}
{{- $_ := set $jwt "enabled" true -}}
{{- $_ := set $jwt "signing_key_file" (printf "/etc/portcullis/identity-jwt/%s" .Values.identityJwt.key) -}}
{{- $_ := set $config "identity_jwt" $jwt -}}
{{- end -}}
{{- if .Values.scim.enabled -}}
{{- $scim := dict "enabled" true "required" .Values.scim.required -}}
{{- if include "portcullis.scimSqlite" . -}}
{{- $_ := set $scim "database_url" "sqlite:///var/lib/portcullis/scim.db" -}}
{{- end -}}
{{- $endpoints := dict -}}
{{- range $name, $endpoint := .Values.scim.endpoints -}}
{{- $e := dict -}}
{{- if $endpoint.username }}{{ $_ := set $e "username" $endpoint.username }}{{ end -}}
{{- if $endpoint.provider }}{{ $_ := set $e "provider" $endpoint.provider }}{{ end -}}
{{- if hasKey $endpoint "required" }}{{ $_ := set $e "required" $endpoint.required }}{{ end -}}
{{- $_ := set $endpoints $name $e -}}
{{- end -}}
{{- $_ := set $scim "endpoints" $endpoints -}}
{{- $_ := set $config "scim" $scim -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{- define "portcullis.secretEnv" -}}
{{- $secret := include "portcullis.secretName" . -}}
{{- $keys := .Values.secrets.keys -}}
{{- $own := not .Values.secrets.existingSecret -}}
- name: COOKIE_SECRET
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $keys.cookieSecret }}}
{{- if include "portcullis.admin" . }}
- name: ADMIN__TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "portcullis.adminSecretName" . }}, key: {{ .Values.admin.key }}}
{{- end }}
{{- if or (not $own) .Values.secrets.clientSecret }}
- name: OAUTH_CLIENT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $keys.clientSecret }}, optional: {{ not $own }}}
{{- end }}
{{- if or (and (not $own) (eq (toString .Values.config.session.store) "redis")) .Values.secrets.redisUrl }}
- name: SESSION__REDIS__URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $keys.redisUrl }}}
{{- end }}
{{- if and .Values.scim.enabled (or (not $own) .Values.secrets.scimDatabaseUrl) }}
- name: SCIM__DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $keys.scimDatabaseUrl }}}
{{- end }}
{{- if .Values.scim.enabled }}
{{- range $name, $endpoint := .Values.scim.endpoints }}
{{- if $endpoint.passwordKey }}
- name: {{ printf "SCIM__ENDPOINTS__%s__PASSWORD" (upper $name) }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $endpoint.passwordKey }}}
{{- end }}
{{- if $endpoint.tokenKey }}
- name: {{ printf "SCIM__ENDPOINTS__%s__TOKEN" (upper $name) }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $endpoint.tokenKey }}}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Portcullis container: the Deployment's, and the sidecar other charts add. */}}
{{- define "portcullis.container" -}}
- name: portcullis
  image: {{ include "portcullis.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["serve"]
  ports:
    - name: http
      containerPort: {{ .Values.containerPort }}
      protocol: TCP
    {{- if include "portcullis.admin" . }}
    - name: admin
      containerPort: {{ .Values.admin.port }}
      protocol: TCP
    {{- end }}
    {{- if .Values.extAuthz.enabled }}
    - name: grpc
      containerPort: {{ .Values.extAuthz.port }}
      protocol: TCP
    {{- end }}
  env:
    {{- include "portcullis.env" . | nindent 4 }}
  {{- $probePort := ternary "admin" "http" (eq (include "portcullis.admin" .) "true") }}
  livenessProbe:
    httpGet: {path: /healthz, port: {{ $probePort }}}
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    httpGet: {path: /readyz, port: {{ $probePort }}}
    periodSeconds: 5
    failureThreshold: 2
  startupProbe:
    httpGet: {path: /healthz, port: {{ $probePort }}}
    periodSeconds: 2
    failureThreshold: 30
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  {{- $mounts := include "portcullis.volumeMounts" . }}
  {{- if trim $mounts }}
  volumeMounts:
    {{- $mounts | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The container's environment: the configuration, the secrets, the proxies. */}}
{{- define "portcullis.env" -}}
{{- include "portcullis.flatEnv" (dict "prefix" "" "value" (fromYaml (include "portcullis.config" .))) | trim }}
{{ include "portcullis.secretEnv" . }}
{{- with .Values.outboundProxy.httpsProxy }}
- name: GLOBAL_AGENT_HTTPS_PROXY
  value: {{ . | quote }}
{{- end }}
{{- with .Values.outboundProxy.noProxy }}
- name: NO_PROXY
  value: {{ . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
`portcullis check` before the proxy starts (checkInitContainer.enabled): the same image,
environment and files; a configuration with a problem keeps the pod from starting, with
every problem named in the init container's log. `--offline` unless
checkInitContainer.probeProviders (then the providers are asked too: credentials,
redirect URL, clock).
*/}}
{{- define "portcullis.checkContainer" -}}
- name: portcullis-check
  image: {{ include "portcullis.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["check"{{ if not .Values.checkInitContainer.probeProviders }}, "--offline"{{ end }}]
  env:
    {{- include "portcullis.env" . | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  {{- $mounts := include "portcullis.volumeMounts" . }}
  {{- if trim $mounts }}
  volumeMounts:
    {{- $mounts | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "portcullis.volumeMounts" -}}
{{- if include "portcullis.scimSqlite" . }}
- name: portcullis-data
  mountPath: /var/lib/portcullis
{{- end }}
{{- if .Values.extraCaBundle.configMap }}
- name: portcullis-ca
  mountPath: /etc/portcullis/ca
  readOnly: true
{{- end }}
{{- if .Values.identityJwt.secretName }}
- name: portcullis-identity-jwt
  mountPath: /etc/portcullis/identity-jwt
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The volumes the container mounts. A sidecar's SQLite directory is an emptyDir. */}}
{{- define "portcullis.volumes" -}}
{{- if include "portcullis.scimSqlite" . }}
- name: portcullis-data
  {{- if and .Values.scim.persistence.enabled (not .sidecar) }}
  persistentVolumeClaim:
    claimName: {{ include "portcullis.fullname" . }}-data
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- if .Values.extraCaBundle.configMap }}
- name: portcullis-ca
  configMap:
    name: {{ .Values.extraCaBundle.configMap }}
{{- end }}
{{- if .Values.identityJwt.secretName }}
- name: portcullis-identity-jwt
  secret:
    secretName: {{ .Values.identityJwt.secretName }}
    items: [{key: {{ .Values.identityJwt.key | quote }}, path: {{ .Values.identityJwt.key | quote }}}]
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
For other charts: `portcullis.sidecar` renders the container and `portcullis.sidecarVolumes`
its volumes, given a context whose .Values are Portcullis's values (for example a
dependency's: (dict "Values" .Values.portcullis "Chart" (dict "Name" "portcullis" "AppVersion" "0.1.0") "Release" .Release)).
Point the pod's Service at the container's port; Portcullis forwards to the app on
localhost (config.upstream_url: http://127.0.0.1:<app port>).
*/}}
{{- define "portcullis.sidecar" -}}
{{ include "portcullis.container" . }}
{{- end -}}

{{- define "portcullis.sidecarVolumes" -}}
{{ include "portcullis.volumes" (merge (dict "sidecar" true) .) }}
{{- end -}}
