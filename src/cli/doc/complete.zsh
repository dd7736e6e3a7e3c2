#compdef kes
@HEADER@
#
# Completes commands, flags, flag values and, when a server variable (KES_SERVER,
# MINIO_KES_SERVER, MINIO_KMS_KES_ENDPOINT) is set, key names: those are asked of the
# server by 'kes completion __complete-keys', which gives up after one second and
# prints nothing on failure.

@DATA@

# Reads the words before the cursor: the command path they name, how many arguments
# follow it, and -k/--insecure.
_kes_scan() {
    _kes_path='' _kes_nargs=0 _kes_insecure=''
    local i word ended=0
    for ((i = 2; i < CURRENT; i++)); do
        word=${words[i]}
        if ((ended)); then
            ((_kes_nargs++))
            continue
        fi
        case $word in
        --) ended=1 ;;
        -k | --insecure) _kes_insecure=-k ;;
        --*=*) ;;
        -*)
            _kes_value "$_kes_path" "$word"
            if [[ -n $REPLY ]]; then ((i++)); fi
            ;;
        *)
            if ((_kes_nargs == 0)); then
                _kes_command "$_kes_path" "$word"
                if [[ -n $REPLY ]]; then
                    _kes_path=${_kes_path:+$_kes_path }$REPLY
                    continue
                fi
            fi
            ((_kes_nargs++))
            ;;
        esac
    done
}

# Offers the candidates of kind $1 (file, text, keys, "choice a b").
_kes_candidates() {
    local -a found
    case $1 in
    file) _files ;;
    text) _message -e values 'value' ;;
    keys)
        [[ -n ${KES_SERVER+set}${MINIO_KES_SERVER+set}${MINIO_KMS_KES_ENDPOINT+set} ]] || return 1
        found=(${(f)"$(${words[1]} completion __complete-keys $_kes_insecure -- "$PREFIX" 2>/dev/null </dev/null)"})
        compadd -a found
        ;;
    choice\ *)
        found=(${=${1#choice }})
        compadd -a found
        ;;
    esac
}

_kes() {
    local REPLY _kes_path _kes_nargs _kes_insecure prev ret=1
    local -a reply
    _kes_scan

    # The value of a flag: "--flag=value" or the word after "--flag".
    if [[ $PREFIX == --*=* ]]; then
        _kes_value "$_kes_path" "${PREFIX%%=*}"
        compset -P '*='
        _kes_candidates "$REPLY"
        return
    fi
    prev=${words[CURRENT-1]}
    if ((CURRENT > 2)) && [[ $prev == -* && $prev != *=* && $prev != -- ]]; then
        _kes_value "$_kes_path" "$prev"
        if [[ -n $REPLY ]]; then
            _kes_candidates "$REPLY"
            return
        fi
    fi
    if [[ $PREFIX == -* ]]; then
        _kes_flags "$_kes_path"
        _describe -t options 'option' reply
        return
    fi
    if ((_kes_nargs == 0)); then
        _kes_commands "$_kes_path"
        if (($#reply)); then _describe -t commands 'command' reply && ret=0; fi
    fi
    _kes_args "$_kes_path"
    case $REPLY in
    keys...) _kes_candidates keys && ret=0 ;;
    file) _kes_candidates file && ret=0 ;;
    ?*) if ((_kes_nargs == 0)); then _kes_candidates "$REPLY" && ret=0; fi ;;
    esac
    return ret
}

if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _kes "$@"
else
    compdef _kes kes
fi
