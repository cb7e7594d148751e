{{- define "qarm.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "qarm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "qarm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qarm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "qarm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "qarm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "qarm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "qarm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "qarm.image" -}}
{{- $tag := .Values.image.tag | default (ternary (printf "%s-gpu" .Chart.AppVersion) .Chart.AppVersion .Values.gpu.enabled) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* The PromQL selector of this release's scrape targets (the ServiceMonitor's job). */}}
{{- define "qarm.selector" -}}
job="{{ include "qarm.fullname" . }}", namespace="{{ .Release.Namespace }}"
{{- end -}}

{{/*
The pod parts the Deployment and the backfill's Ray pods share, so the two never drift:
the Redis URL from its Secret, the bundle volume, its mount, and the init container that
fills it (bundle.source: initContainer). Each renders nothing where the source needs none.
*/}}
{{- define "qarm.redisUrlEnv" -}}
- name: QARM_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret | quote }}
      key: {{ .Values.redis.key | quote }}
{{- if .Values.redis.tls.existingSecret }}
- name: QARM_REDIS_CA_FILE
  value: /etc/qarm/redis-tls/ca.crt
{{- if .Values.redis.tls.clientCertificate }}
- name: QARM_REDIS_CERT_FILE
  value: /etc/qarm/redis-tls/tls.crt
- name: QARM_REDIS_KEY_FILE
  value: /etc/qarm/redis-tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{- /* The Redis TLS files (redis.tls.existingSecret), read-only, for every pod that opens the store. */}}
{{- define "qarm.redisTlsVolume" -}}
{{- if .Values.redis.tls.existingSecret }}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.tls.existingSecret | quote }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "qarm.redisTlsVolumeMount" -}}
{{- if .Values.redis.tls.existingSecret }}
- name: redis-tls
  mountPath: /etc/qarm/redis-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "qarm.bundleVolume" -}}
{{- $b := .Values.bundle -}}
{{- if eq $b.source "pvc" -}}
- name: bundles
  persistentVolumeClaim:
    claimName: {{ $b.pvc.claimName }}
    readOnly: true
{{- else if eq $b.source "initContainer" -}}
- name: bundles
  emptyDir:
    sizeLimit: {{ $b.sizeLimit }}
{{- end -}}
{{- end -}}

{{- define "qarm.bundleVolumeMount" -}}
{{- $b := .Values.bundle -}}
{{- if ne $b.source "image" -}}
- name: bundles
  mountPath: {{ $b.mountPath }}
  readOnly: true
  {{- if and (eq $b.source "pvc") $b.pvc.subPath }}
  subPath: {{ $b.pvc.subPath }}
  {{- end }}
{{- end -}}
{{- end -}}

{{- define "qarm.bundleInitContainer" -}}
{{- $b := .Values.bundle -}}
{{- if eq $b.source "initContainer" -}}
- name: bundle
  image: {{ $b.initContainer.image | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  # Copies every bundle version the image holds; the service verifies each file's
  # sha256 against its manifest when it loads one.
  command: ["sh", "-c", "cp -R {{ $b.initContainer.sourcePath }}/. /target/"]
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    requests:
      cpu: 100m
      memory: 64Mi
    limits:
      memory: 256Mi
  volumeMounts:
    - name: bundles
      mountPath: /target
{{- end -}}
{{- end -}}

{{/*
The backfill's RayJob (templates/rayjob.yaml). Its objects carry a name of their own
(`qarm-backfill`), so that no selector of the service's (Service, Deployment, PDB,
ServiceMonitor) picks up a Ray pod.
*/}}
{{- define "qarm.backfill.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qarm.name" . }}-backfill
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: backfill
{{- end -}}

{{- define "qarm.backfill.labels" -}}
{{- $labels := include "qarm.labels" . | fromYaml -}}
{{- merge (include "qarm.backfill.selectorLabels" . | fromYaml) $labels | toYaml -}}
{{- end -}}

{{/* The version to backfill: backfill.version, else bundle.version, never `latest`. */}}
{{- define "qarm.backfill.version" -}}
{{- $version := .Values.backfill.version | default .Values.bundle.version -}}
{{- if eq $version "latest" -}}
{{- fail "backfill.version: set the version to backfill (bundle.version is `latest`, which names none)" -}}
{{- end -}}
{{- $version -}}
{{- end -}}

{{/* One RayJob per version; KubeRay refuses RayJob names over 47 characters. */}}
{{- define "qarm.backfill.name" -}}
{{- $suffix := printf "backfill-%s" (include "qarm.backfill.version" . | lower) -}}
{{- $prefix := include "qarm.fullname" . | trunc (int (sub 46 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $prefix $suffix -}}
{{- end -}}

{{- define "qarm.backfill.gpu" -}}
{{- if gt (float64 .Values.backfill.gpusPerActor) 0.0 }}true{{ end -}}
{{- end -}}

{{- define "qarm.backfill.image" -}}
{{- $bf := .Values.backfill -}}
{{- $tag := printf "%s-backfill%s" .Chart.AppVersion (ternary "-gpu" "" (eq (include "qarm.backfill.gpu" .) "true")) -}}
{{- printf "%s:%s" ($bf.image.repository | default .Values.image.repository) ($bf.image.tag | default $tag) -}}
{{- end -}}

{{/* A word for a POSIX shell: as is when plain, else single-quoted. */}}
{{- define "qarm.shellWord" -}}
{{- if regexMatch "^[A-Za-z0-9_./:=@%+,-]+$" . -}}
{{- . -}}
{{- else -}}
'{{ replace "'" "'\\''" . }}'
{{- end -}}
{{- end -}}

{{/* The job's shell command, run on the Ray head (the backfill CLI: backfill/__main__.py). */}}
{{- define "qarm.backfill.entrypoint" -}}
{{- $bf := .Values.backfill -}}
{{- $version := include "qarm.backfill.version" . -}}
{{- $words := list "python" "-m" "backfill" "run" "--bundle" (printf "%s/%s" .Values.bundle.mountPath $version) -}}
{{- range $bf.catalogs -}}
{{- $words = concat $words (list "--catalog" .) -}}
{{- end -}}
{{- $words = concat $words (list "--address" "auto" "--actors" (int64 $bf.actors | toString) "--batch-size" (int64 $bf.batchSize | toString) "--gpus-per-actor" (toString $bf.gpusPerActor) "--wait-pods-s" (int64 $bf.waitPodsS | toString)) -}}
{{- $quoted := list -}}
{{- range $words -}}
{{- $quoted = append $quoted (include "qarm.shellWord" .) -}}
{{- end -}}
{{- join " " $quoted -}}
{{- if $bf.activate }} && python -m backfill activate {{ include "qarm.shellWord" $version }}{{ end -}}
{{- end -}}

{{/*
A Ray pod: the service's pod security, its ConfigMap, Redis URL and bundle volume; /tmp an
emptyDir (Ray's session folder /tmp/ray, Python's temp files), the root filesystem read-only.
KubeRay adds the `ray start` command, ports, probes and a /dev/shm emptyDir for the object store.
Called with (dict "root" $ "container" NAME "group" backfill.head|workers "gpus" N).
*/}}
{{- define "qarm.backfill.podTemplate" -}}
{{- $root := .root -}}
{{- $bf := $root.Values.backfill -}}
metadata:
  labels:
    {{- include "qarm.backfill.selectorLabels" $root | nindent 4 }}
spec:
  serviceAccountName: {{ include "qarm.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with include "qarm.bundleInitContainer" $root }}
  initContainers:
    {{- . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .container }}
      image: {{ include "qarm.backfill.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      envFrom:
        - configMapRef:
            name: {{ include "qarm.fullname" $root }}
      env:
        {{- include "qarm.redisUrlEnv" $root | nindent 8 }}
        {{- if .gpus }}
        - name: QARM_EXECUTION_PROVIDER
          value: cuda
        {{- end }}
      resources:
        {{- $res := deepCopy .group.resources }}
        {{- if .gpus }}
        {{- $limits := default dict $res.limits }}
        {{- $_ := set $limits "nvidia.com/gpu" (int64 .gpus) }}
        {{- $_ := set $res "limits" $limits }}
        {{- end }}
        {{- toYaml $res | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- with include "qarm.bundleVolumeMount" $root }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with include "qarm.redisTlsVolumeMount" $root }}
        {{- . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $bf.tmpSizeLimit }}
    {{- with include "qarm.bundleVolume" $root }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with include "qarm.redisTlsVolume" $root }}
    {{- . | nindent 4 }}
    {{- end }}
  {{- $nodeSelector := .group.nodeSelector }}
  {{- $tolerations := .group.tolerations }}
  {{- if .gpus }}
  {{- $nodeSelector = merge (deepCopy .group.nodeSelector) $root.Values.gpu.nodeSelector }}
  {{- $tolerations = concat $root.Values.gpu.tolerations .group.tolerations }}
  {{- end }}
  {{- with $nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
