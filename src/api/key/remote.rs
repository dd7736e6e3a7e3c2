//! Generate, encrypt and decrypt with a resident key, made on an event loop
//! (`crate::api::prepare_remote`): the same request reading and the same answers as the
//! handlers in `super`, split where the handler would wait for CipherTrust: the first
//! half prepares the call, the second (`Finish`) turns its outcome into the answer.

use std::time::Instant;

use zeroize::Zeroizing;

use super::{
    DecryptRequest, EncryptRequest, ciphertext_answer, data_key_answer, generate_request, key_name,
    parse_object, plaintext_answer, seal_failure, store_failure,
};
use crate::api::ctx::{Ctx, Remote, RemoteJob, Resumed, busy, errors, fail};
use crate::crypto::random_dek;
use crate::keys::MasterKey;
use crate::keystore::Sealed;
use crate::keystore::remote::{Judged, RemoteCrypto};
use crate::state::State;

/// The keystore's remote crypto, when the request's key is a resident key the cache
/// knows (else the request goes to the pool as before).
fn resident<'a>(ctx: &Ctx<'a>, name: &str) -> Result<&'a dyn RemoteCrypto, Remote> {
    match ctx.state.keys.cached(name) {
        Some(MasterKey::Resident { .. }) => ctx.state.keys.store().remote().ok_or(Remote::Pool),
        _ => Err(Remote::Pool),
    }
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
        let remote = resident(ctx, name)?;
        let dek = random_dek();
        let call = remote
            .prepare_seal(name, dek.as_ref(), &req.context.0, deadline)
            .ok_or(Remote::Pool)?;
        let name = name.to_string();
        Ok::<_, Remote>(RemoteJob {
            call,
            finish: Box::new(move |state, result| {
                let Some((outcome, took)) = result else {
                    return Resumed::Answer(busy());
                };
                match remote_of(state).finish_seal(&name, outcome, took) {
                    Judged::Retry => Resumed::Pool,
                    Judged::Done(Ok(sealed)) => {
                        Resumed::Answer(data_key_answer(dek.as_ref(), &sealed.encode()))
                    }
                    Judged::Done(Err(e)) => Resumed::Answer(seal_failure(state, &name, e)),
                }
            }),
        })
    })();
    prepared.map_or_else(|refusal| refusal, Remote::Call)
}

pub fn encrypt(ctx: &Ctx, deadline: Instant) -> Remote {
    let prepared = (|| {
        let name = key_name(ctx)?;
        let req: EncryptRequest = parse_object(&ctx.req.body, "invalid request body")?;
        let remote = resident(ctx, name)?;
        let call = remote
            .prepare_seal(name, &req.plaintext.0, &req.context.0, deadline)
            .ok_or(Remote::Pool)?;
        let name = name.to_string();
        Ok::<_, Remote>(RemoteJob {
            call,
            finish: Box::new(move |state, result| {
                let Some((outcome, took)) = result else {
                    return Resumed::Answer(busy());
                };
                match remote_of(state).finish_seal(&name, outcome, took) {
                    Judged::Retry => Resumed::Pool,
                    Judged::Done(Ok(sealed)) => {
                        Resumed::Answer(ciphertext_answer(&sealed.encode()))
                    }
                    Judged::Done(Err(e)) => Resumed::Answer(seal_failure(state, &name, e)),
                }
            }),
        })
    })();
    prepared.map_or_else(|refusal| refusal, Remote::Call)
}

pub fn decrypt(ctx: &Ctx, deadline: Instant) -> Remote {
    let prepared = (|| {
        let name = key_name(ctx)?;
        let req: DecryptRequest = parse_object(&ctx.req.body, "invalid request body")?;
        let remote = resident(ctx, name)?;
        let sealed = Sealed::parse(&req.ciphertext.0).map_err(|_| fail(errors::DECRYPT))?;
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
