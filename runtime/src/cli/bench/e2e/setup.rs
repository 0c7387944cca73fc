//! The run's config, store and plugin.

use std::sync::Arc;

use anyhow::Context;

use super::E2eArgs;
use crate::config::Config;
use crate::host::{Host, HostOptions, Plugin, PluginSpec};
use crate::names::DestinationName;
use crate::storage::log::{Durability, FaultyIo};
use crate::storage::{EmbeddedOptions, EmbeddedStorage, Storage};

/// The config of the run: one queue bound to the plugin with the asked guarantee.
pub(super) fn config(args: &E2eArgs) -> anyhow::Result<String> {
    let plugin = std::path::absolute(args.plugin())?;
    let (out, grant) = if args.effects {
        ("[queues.out]\n", "publish = [\"out\"]\n")
    } else {
        ("", "")
    };
    let mut binding_extra = format!("guarantee = \"{}\"\n", args.guarantee);
    if let Some(c) = args.concurrency {
        binding_extra.push_str(&format!("concurrency = {c}\n"));
    }
    Ok(format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         [broker]\nfsync = \"always\"\n\
         [queues.bench]\n{out}\
         [plugins.bench]\npath = {:?}\n{grant}\
         [[bindings]]\nsource = \"bench\"\nplugin = \"bench\"\n{binding_extra}",
        plugin.display().to_string()
    ))
}

/// The store and the plugin, opened and loaded as [`crate::server::Runtime::start`] does, with
/// a file system that counts fsyncs.
pub(super) struct Setup {
    pub(super) storage: Arc<EmbeddedStorage>,
    pub(super) io: FaultyIo,
    pub(super) source: DestinationName,
    pub(super) plugin: Arc<Plugin>,
    pub(super) _host: Arc<Host>,
}

impl Setup {
    pub(super) fn start(config: &Config) -> anyhow::Result<Setup> {
        let io = FaultyIo::new();
        let options = EmbeddedOptions {
            durability: Durability::Always,
            segment_bytes: config.server.segment_bytes,
            io: Arc::new(io.clone()),
            ..EmbeddedOptions::default()
        };
        let storage = Arc::new(EmbeddedStorage::open(
            config.server.data_dir.join("store"),
            options,
        )?);
        for name in config.destinations.keys() {
            storage.open_log(name)?;
        }
        let host = Host::new(HostOptions::default())?;
        let binding = &config.bindings[0];
        let p = &config.plugins[&binding.plugin];
        let spec = PluginSpec {
            name: binding.plugin.clone(),
            path: p.path.clone(),
            limits: p.limits,
            publish: p.publish.clone(),
            max_message_size: config.server.max_message_size as usize,
            instances: p.instances,
        };
        let plugin = host
            .load(spec, Arc::clone(&storage) as Arc<dyn Storage>)
            .context("loading the plugin")?;
        Ok(Setup {
            storage,
            io,
            source: binding.source.clone(),
            plugin: Arc::new(plugin),
            _host: host,
        })
    }
}
