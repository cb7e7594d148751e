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
