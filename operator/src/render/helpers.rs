//! Template helpers. Every helper's output is a slot (see [`super::slots`]), or else escaped by
//! [`super::escape::yaml_quote`] or written as one flow node.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};

use super::{escape, slots};

/// Registers Plinth's helpers on a registry.
pub fn register(hb: &mut Handlebars<'_>) {
    hb.register_helper("json", Box::new(Json));
    hb.register_helper("concat", Box::new(Concat));
    hb.register_helper("default", Box::new(Default));
}

/// The strict-mode error for a parameter naming a variable that does not exist.
fn missing(p: &handlebars::PathAndJson<'_>) -> RenderError {
    RenderErrorReason::MissingVariable(Some(p.relative_path().cloned().unwrap_or_default())).into()
}

/// `{{json VALUE}}`: any value as one YAML flow node (numbers stay numbers, objects stay objects).
#[derive(Debug, Clone, Copy)]
struct Json;

impl HelperDef for Json {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        if h.params().len() != 1 {
            return Err(RenderErrorReason::Other("json takes exactly one value: {{json spec.replicas}}".into()).into());
        }
        let param = h.param(0).ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
        if param.is_value_missing() {
            return Err(missing(param));
        }
        // A value read from the template context is recorded by where it stands, when that is exactly where
        // it was read (not from a block's own data); anything else is copied.
        let in_place = param
            .context_path()
            .filter(|path| slots::value_at(ctx.data(), path).is_some_and(|v| std::ptr::eq(v, param.value())));
        let recorded = match in_place {
            Some(path) => slots::record_at(path),
            None => slots::record(|| param.value().clone()),
        };
        let text = recorded.unwrap_or_else(|| {
            let mut s = String::new();
            escape::push_flow(&mut s, param.value());
            s
        });
        out.write(&text)?;
        Ok(())
    }
}

/// `{{concat A B ...}}`: the parameters joined as one string (then quoted like any value).
#[derive(Debug, Clone, Copy)]
struct Concat;

impl HelperDef for Concat {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let mut s = String::new();
        for p in h.params() {
            if p.is_value_missing() {
                return Err(missing(p));
            }
            match p.value() {
                serde_json::Value::String(v) => s.push_str(v),
                serde_json::Value::Null => {}
                other => s.push_str(&other.to_string()),
            }
        }
        Ok(ScopedJson::Derived(serde_json::Value::String(s)))
    }
}

/// `{{default VALUE FALLBACK}}`: VALUE unless it is null, else FALLBACK.
#[derive(Debug, Clone, Copy)]
struct Default;

impl HelperDef for Default {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let (Some(v), Some(fallback)) = (h.param(0), h.param(1)) else {
            return Err(
                RenderErrorReason::Other("default takes two values: {{default values.x \"fallback\"}}".into()).into(),
            );
        };
        let chosen = if v.value().is_null() {
            fallback.value()
        } else {
            v.value()
        };
        Ok(ScopedJson::Derived(chosen.clone()))
    }
}
