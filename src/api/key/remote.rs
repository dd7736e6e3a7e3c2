//! Generate, encrypt and decrypt with a resident key, made on an event loop
//! (`crate::api::prepare_remote`): the same request reading and the same answers as the
//! handlers in `super`, split where the handler would wait for CipherTrust: the first
//! half prepares the call, the second (`Finish`) turns its outcome into the answer.
//!
//! With intermediate keys (`intermediate_key:`), a request whose intermediate key is in
//! memory was answered on the loop already (`api::warm_key`); one that needs a wrap or
//! an unwrap goes to the pool, which makes it. Only a decrypt of a format-1 envelope
//! (sealed by CipherTrust itself) is made here then.

use std::time::Instant;

use zeroize::Zeroizing;

use super::{
    DecryptRequest, EncryptRequest, ciphertext_answer, data_key_answer, generate_request, key_name,
    parse_object, plaintext_answer, reserved_context, seal_failure, store_failure,
};
use crate::api::ctx::{Ctx, Remote, RemoteJob, Resumed, busy, errors, fail};
use crate::crypto::random_dek;
use crate::http::Response;
use crate::keys::MasterKey;
use crate::keystore::remote::{Judged, RemoteCrypto};
use crate::keystore::sealed::{Envelope, is_reserved_context};
use crate::state::State;

/// The keystore's remote crypto, when the request's key is a resident key the cache
/// knows (else the request goes to the pool as before).
fn resident<'a>(ctx: &Ctx<'a>, name: &str) -> Result<&'a dyn RemoteCrypto, Remote> {
    match ctx.state.keys.cached(name) {
        Some(MasterKey::Resident { .. }) => ctx.state.keys.store().remote().ok_or(Remote::Pool),
        _ => Err(Remote::Pool),
    }
}

/// The keystore's remote crypto for a generate or encrypt: none while intermediate keys
/// are on (the pool wraps a new one); a context an intermediate key's wrap uses is
/// refused, as the blocking handler refuses it.
fn sealing<'a>(ctx: &Ctx<'a>, name: &str, context: &[u8]) -> Result<&'a dyn RemoteCrypto, Remote> {
    if ctx.state.keys.uses_intermediate_keys() {
        return Err(Remote::Pool);
    }
    let remote = resident(ctx, name)?;
    if is_reserved_context(context) {
        return Err(Remote::Answer(reserved_context()));
    }
    Ok(remote)
}

fn remote_of(state: &State) -> &dyn RemoteCrypto {
    state
        .keys
        .store()
        .remote()
        .expect("a keystore that prepared a remote call judges its answer")
}

pub fn generate(ctx: &Ctx, deadline: Instant) -> Remote {
    let prepared = (|| {
        let name = key_name(ctx)?;
        let req = generate_request(ctx)?;
        let dek = random_dek();
        let sealed = dek.clone();
        seal_job(
            ctx,
            name,
            sealed.as_ref(),
            &req.context.0,
            deadline,
            move |envelope| data_key_answer(dek.as_ref(), envelope),
        )
    })();
    prepared.map_or_else(|refusal| refusal, Remote::Call)
}

pub fn encrypt(ctx: &Ctx, deadline: Instant) -> Remote {
    let prepared = (|| {
        let name = key_name(ctx)?;
        let req: EncryptRequest = parse_object(&ctx.req.body, "invalid request body")?;
        seal_job(
            ctx,
            name,
            &req.plaintext.0,
            &req.context.0,
            deadline,
            ciphertext_answer,
        )
    })();
    prepared.map_or_else(|refusal| refusal, Remote::Call)
}

/// The call that seals `plaintext` with resident key `name`, and its second half, which
/// answers with `answer` of the envelope.
fn seal_job(
    ctx: &Ctx,
    name: &str,
    plaintext: &[u8],
    context: &[u8],
    deadline: Instant,
    answer: impl FnOnce(&[u8]) -> Response + Send + 'static,
) -> Result<RemoteJob, Remote> {
    let remote = sealing(ctx, name, context)?;
    let call = remote
        .prepare_seal(name, plaintext, context, deadline)
        .ok_or(Remote::Pool)?;
    let name = name.to_string();
    Ok(RemoteJob {
        call,
        finish: Box::new(move |state, result| {
            let Some((outcome, took)) = result else {
                return Resumed::Answer(busy());
            };
            match remote_of(state).finish_seal(&name, outcome, took) {
                Judged::Retry => Resumed::Pool,
                Judged::Done(Ok(sealed)) => Resumed::Answer(answer(&sealed.encode())),
                Judged::Done(Err(e)) => Resumed::Answer(seal_failure(state, &name, e)),
            }
        }),
    })
}

pub fn decrypt(ctx: &Ctx, deadline: Instant) -> Remote {
    let prepared = (|| {
        let name = key_name(ctx)?;
        let req: DecryptRequest = parse_object(&ctx.req.body, "invalid request body")?;
        let remote = resident(ctx, name)?;
        let sealed = match Envelope::parse(&req.ciphertext.0) {
            Err(_) => return Err(Remote::Answer(fail(errors::DECRYPT))),
            // An intermediate key to unwrap first: the pool does it.
            Ok(Envelope::Intermediate(_)) => return Err(Remote::Pool),
            // The context an intermediate key is wrapped with: never a data key's (the
            // keystore would hand out the intermediate key).
            Ok(Envelope::Direct(_)) if is_reserved_context(&req.context.0) => {
                return Err(Remote::Answer(fail(errors::DECRYPT)));
            }
            Ok(Envelope::Direct(sealed)) => sealed,
        };
        let call = remote
            .prepare_unseal(name, &sealed, &req.context.0, deadline)
            .ok_or(Remote::Pool)?;
        let name = name.to_string();
        Ok::<_, Remote>(RemoteJob {
            call,
            finish: Box::new(move |state, result| {
                let Some((outcome, took)) = result else {
                    return Resumed::Answer(busy());
                };
                match remote_of(state).finish_unseal(&name, &sealed, outcome, took) {
                    Judged::Retry => Resumed::Pool,
                    Judged::Done(Ok(Some(plaintext))) => {
                        let plaintext: Zeroizing<Vec<u8>> = plaintext;
                        Resumed::Answer(plaintext_answer(&plaintext))
                    }
                    Judged::Done(Ok(None)) => Resumed::Answer(fail(errors::DECRYPT)),
                    Judged::Done(Err(e)) => Resumed::Answer(store_failure(e, "failed to decrypt")),
                }
            }),
        })
    })();
    prepared.map_or_else(|refusal| refusal, Remote::Call)
}
