//! Plugin versions on JetStream ([`SharedVersions`]): components in the stream
//! `WEIR_plugins`, content-addressed, and each plugin's active-version record in the bucket
//! `weir_plugins`, written with compare-and-set on its revision.
//!
//! A component is stored in chunks (`weir.plugins.<sha256>.<n>`, each at most half the
//! servers' `max_payload`), then its manifest (`weir.plugins.<sha256>.m`: size and chunk
//! count), each subject keeping its last message. The manifest is published only after every
//! chunk was acknowledged, so a component whose manifest is found is complete; a reader
//! checks the reassembled bytes against the SHA-256 anyway. Storing the same component again
//! rewrites identical messages. Components are never removed yet (the stream grows by each
//! distinct version deployed).

use std::sync::Arc;

use async_nats::jetstream::kv::{Store, UpdateErrorKind};
use async_nats::jetstream::stream::{self, Stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Inner, layout, remote};
use crate::deploy::{ActiveVersion, OnChange, SharedVersions};
use crate::names::PluginName;
use crate::storage::StorageError;

/// The manifest of a stored component.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    size: u64,
    chunks: u32,
}

/// The plugin versions of the hosts sharing one cluster.
pub struct NatsPluginVersions {
    inner: Arc<Inner>,
    components: Stream,
    records: Store,
}

impl std::fmt::Debug for NatsPluginVersions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPluginVersions").finish_non_exhaustive()
    }
}

impl NatsPluginVersions {
    /// Makes (or finds) the stream and the bucket.
    pub(super) fn open(inner: Arc<Inner>) -> Result<NatsPluginVersions, StorageError> {
        let (js, r) = (inner.js.clone(), inner.cfg.replicas);
        let (components, records) = inner.block(super::retrying(move || {
            let js = js.clone();
            async move {
                let config = stream::Config {
                    name: layout::PLUGIN_COMPONENTS.to_owned(),
                    description: Some("weir plugin components, by SHA-256".to_owned()),
                    subjects: vec![format!("{}.>", layout::PLUGIN_SUBJECTS)],
                    max_messages_per_subject: 1,
                    num_replicas: r,
                    storage: stream::StorageType::File,
                    allow_direct: true,
                    ..Default::default()
                };
                let mut s = js.get_or_create_stream(config).await.map_err(remote)?;
                super::check_replicas(&mut s, r).await?;
                let records = super::bucket(&js, layout::PLUGIN_VERSIONS, r, None).await?;
                Ok::<_, StorageError>((s, records))
            }
        }))?;
        Ok(NatsPluginVersions {
            inner,
            components,
            records,
        })
    }

    async fn manifest(stream: &Stream, sha256: &str) -> Result<Option<Manifest>, StorageError> {
        let subject = format!("{}.{sha256}.m", layout::PLUGIN_SUBJECTS);
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => serde_json::from_slice(&m.payload)
                .map(Some)
                .map_err(|e| StorageError::Remote(format!("component manifest {subject}: {e}"))),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(remote(e)),
        }
    }
}

fn check_sha256(sha256: &str) -> Result<(), StorageError> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(StorageError::Remote(format!(
            "expected a SHA-256 in hex, found {sha256:?}"
        )))
    }
}

impl SharedVersions for NatsPluginVersions {
    fn put_component(&self, sha256: &str, bytes: &[u8]) -> Result<(), StorageError> {
        check_sha256(sha256)?;
        let (js, stream) = (self.inner.js.clone(), self.components.clone());
        let chunk = (self.inner.max_payload / 2).clamp(4096, 512 * 1024);
        let (sha256, bytes) = (sha256.to_owned(), bytes.to_vec());
        self.inner.block(async move {
            if NatsPluginVersions::manifest(&stream, &sha256)
                .await?
                .is_some()
            {
                return Ok(());
            }
            let mut acks = Vec::new();
            let mut chunks = 0u32;
            for (n, part) in bytes.chunks(chunk).enumerate() {
                let subject = format!("{}.{sha256}.{n}", layout::PLUGIN_SUBJECTS);
                acks.push(
                    js.publish(subject, part.to_vec().into())
                        .await
                        .map_err(remote)?,
                );
                chunks += 1;
            }
            for ack in acks {
                ack.await.map_err(remote)?;
            }
            let manifest = Manifest {
                size: bytes.len() as u64,
                chunks,
            };
            let subject = format!("{}.{sha256}.m", layout::PLUGIN_SUBJECTS);
            let body = serde_json::to_vec(&manifest).expect("serializes");
            js.publish(subject, body.into())
                .await
                .map_err(remote)?
                .await
                .map_err(remote)?;
            Ok(())
        })
    }

    fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StorageError> {
        check_sha256(sha256)?;
        let stream = self.components.clone();
        let sha256 = sha256.to_owned();
        self.inner.block(async move {
            let Some(m) = NatsPluginVersions::manifest(&stream, &sha256).await? else {
                return Ok(None);
            };
            let mut bytes = Vec::with_capacity(usize::try_from(m.size).unwrap_or(0));
            for n in 0..m.chunks {
                let subject = format!("{}.{sha256}.{n}", layout::PLUGIN_SUBJECTS);
                let part = stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                    .map_err(|e| StorageError::Remote(format!("component chunk {subject}: {e}")))?;
                bytes.extend_from_slice(&part.payload);
            }
            let found = crate::host::content_hash(&bytes);
            if found != sha256 {
                return Err(StorageError::Remote(format!(
                    "the stored component {sha256} reads back with SHA-256 {found}"
                )));
            }
            Ok(Some(bytes))
        })
    }

    fn active(&self, plugin: &PluginName) -> Result<Option<(ActiveVersion, u64)>, StorageError> {
        let (records, key) = (self.records.clone(), layout::escape(plugin.as_str()));
        self.inner.block(async move {
            match records.entry(&key).await.map_err(remote)? {
                Some(e) if !e.value.is_empty() => {
                    let record = serde_json::from_slice(&e.value).map_err(|err| {
                        StorageError::Remote(format!("the version record of `{key}`: {err}"))
                    })?;
                    Ok(Some((record, e.revision)))
                }
                _ => Ok(None),
            }
        })
    }

    fn set_active(
        &self,
        plugin: &PluginName,
        record: &ActiveVersion,
        expected: u64,
    ) -> Result<Option<u64>, StorageError> {
        let (records, key) = (self.records.clone(), layout::escape(plugin.as_str()));
        let body = serde_json::to_vec(record).expect("serializes");
        let write_id = record.write_id.clone();
        self.inner.block(async move {
            let err = match records.update(&key, body.into(), expected).await {
                Ok(revision) => return Ok(Some(revision)),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => return Ok(None),
                Err(e) => e,
            };
            // Ambiguous (a time-out, say): the record read back says whether it was written.
            let entry = records.entry(&key).await.map_err(remote)?;
            match entry {
                Some(e) => {
                    let ours = serde_json::from_slice::<ActiveVersion>(&e.value)
                        .is_ok_and(|r| r.write_id == write_id);
                    if ours {
                        Ok(Some(e.revision))
                    } else if e.revision != expected {
                        Ok(None)
                    } else {
                        Err(remote(err))
                    }
                }
                None if expected != 0 => Ok(None),
                None => Err(remote(err)),
            }
        })
    }

    fn watch(&self, on_change: OnChange) {
        let records = self.records.clone();
        self.inner.handle.spawn(async move {
            let mut seen = 0u64;
            loop {
                let watch = if seen == 0 {
                    records.watch_with_history(">").await
                } else {
                    records.watch_all_from_revision(seen + 1).await
                };
                let mut watch = match watch {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!("nats: cannot watch the plugin versions: {e}; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    }
                };
                while let Some(entry) = watch.next().await {
                    let entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!("nats: plugin version watch failed: {e}; resuming");
                            break;
                        }
                    };
                    seen = seen.max(entry.revision);
                    let plugin = layout::unescape(&entry.key)
                        .and_then(|n| PluginName::new(n).ok());
                    let record = serde_json::from_slice::<ActiveVersion>(&entry.value);
                    match (plugin, record) {
                        (Some(p), Ok(r)) => on_change(p, r, entry.revision),
                        _ => tracing::warn!(key = %entry.key, "nats: ignoring a plugin version record weir cannot read"),
                    }
                }
                // The watch ended (the server closed its consumer): resume after a pause.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
    }
}
