//! The `tracing` layers: one bound to a given [`Logger`], and the process-wide router that
//! sends events to whichever logger is current.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use tracing::level_filters::LevelFilter;
use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use super::format;
use super::{LogError, Logger, filter_from_u8, level_enabled};

/// A `tracing` layer that writes every enabled event to one [`Logger`].
///
/// Get one with [`Logger::layer`] to add the logger to a subscriber of your own, or use
/// [`Logger::dispatch`] for a ready subscriber.
pub struct LoggerLayer {
    pub(crate) logger: Arc<Logger>,
}

impl std::fmt::Debug for LoggerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggerLayer").finish_non_exhaustive()
    }
}

/// The formatted fields of a span, kept in the span's extensions.
struct SpanFields(String);

fn on_new_span<S>(attrs: &span::Attributes<'_>, id: &span::Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if let Some(span) = ctx.span(id) {
        let mut fields = String::new();
        format::span_fields(attrs, &mut fields);
        span.extensions_mut().insert(SpanFields(fields));
    }
}

fn on_record<S>(id: &span::Id, values: &span::Record<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if let Some(span) = ctx.span(id) {
        let mut ext = span.extensions_mut();
        if let Some(SpanFields(fields)) = ext.get_mut::<SpanFields>() {
            format::record_fields(values, fields);
        }
    }
}

fn write_event<S>(logger: &Logger, event: &Event<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let line = format::event_line(event, logger.pid, |out| {
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                out.push_str(span.name());
                let ext = span.extensions();
                if let Some(SpanFields(fields)) = ext.get::<SpanFields>()
                    && let Some(rest) = fields.strip_prefix(' ')
                {
                    out.push('{');
                    out.push_str(rest);
                    out.push('}');
                }
                out.push(':');
            }
            out.push(' ');
        }
    });
    logger.submit(line);
}

fn interest(enabled: bool) -> Interest {
    if enabled {
        Interest::always()
    } else {
        Interest::never()
    }
}

impl<S> Layer<S> for LoggerLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Cached per callsite; `Logger::set_level` rebuilds the cache.
        interest(level_enabled(self.logger.level_u8(), metadata.level()))
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        level_enabled(self.logger.level_u8(), metadata.level())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(filter_from_u8(self.logger.level_u8()))
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        on_new_span(attrs, id, &ctx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        on_record(id, values, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The interest cache may lag a level change by a moment; the atomic is the truth.
        if level_enabled(self.logger.level_u8(), event.metadata().level()) {
            write_event(&self.logger, event, &ctx);
        }
    }
}

/// The logger the process-wide router sends events to, if any.
static CURRENT: RwLock<Option<Arc<Logger>>> = RwLock::new(None);
/// The current logger's level (0 = off when there is none), read without the lock.
static CURRENT_LEVEL: AtomicU8 = AtomicU8::new(0);
/// Whether installing the router as the global default subscriber succeeded.
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// The process-wide layer: routes each event to the current logger, or drops it silently
/// when there is none (before the log module starts, after it stops).
struct Router;

impl<S> Layer<S> for Router
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        interest(level_enabled(
            CURRENT_LEVEL.load(Ordering::Relaxed),
            metadata.level(),
        ))
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        level_enabled(CURRENT_LEVEL.load(Ordering::Relaxed), metadata.level())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(filter_from_u8(CURRENT_LEVEL.load(Ordering::Relaxed)))
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        on_new_span(attrs, id, &ctx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        on_record(id, values, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Take the logger out of the lock before formatting: a field's Debug impl runs user
        // code, which must not run while shutdown waits for the write lock.
        let logger = CURRENT
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|l| level_enabled(l.level_u8(), event.metadata().level()))
            .cloned();
        if let Some(logger) = logger {
            write_event(&logger, event, &ctx);
        }
    }
}

/// Makes `logger` the target of the process-wide subscriber, installing that subscriber on
/// first use.
pub(crate) fn route_to(logger: &Arc<Logger>) -> Result<(), LogError> {
    let installed = *INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Router);
        tracing::subscriber::set_global_default(subscriber).is_ok()
    });
    if !installed {
        return Err(LogError::GlobalSubscriberTaken);
    }
    {
        let mut current = CURRENT.write().unwrap_or_else(|p| p.into_inner());
        CURRENT_LEVEL.store(logger.level_u8(), Ordering::Relaxed);
        *current = Some(Arc::clone(logger));
    }
    tracing::callsite::rebuild_interest_cache();
    Ok(())
}

/// Stops routing to `logger` if it is the current one.
pub(crate) fn unroute(logger: &Logger) {
    let changed = {
        let mut current = CURRENT.write().unwrap_or_else(|p| p.into_inner());
        if current.as_deref().is_some_and(|c| std::ptr::eq(c, logger)) {
            *current = None;
            CURRENT_LEVEL.store(0, Ordering::Relaxed);
            true
        } else {
            false
        }
    };
    if changed {
        tracing::callsite::rebuild_interest_cache();
    }
}

/// Called after `logger`'s level changed: keeps the router's copy in step.
pub(crate) fn level_changed(logger: &Logger) {
    let current = CURRENT.read().unwrap_or_else(|p| p.into_inner());
    if current.as_deref().is_some_and(|c| std::ptr::eq(c, logger)) {
        CURRENT_LEVEL.store(logger.level_u8(), Ordering::Relaxed);
    }
}

/// Whether `logger` is the one the process-wide subscriber writes to.
pub(crate) fn is_current(logger: &Logger) -> bool {
    let current = CURRENT.read().unwrap_or_else(|p| p.into_inner());
    current.as_deref().is_some_and(|c| std::ptr::eq(c, logger))
}
