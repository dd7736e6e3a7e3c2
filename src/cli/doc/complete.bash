# bash completion for kes                                  -*- shell-script -*-
@HEADER@
#
# Completes commands, flags, flag values and, when a server variable (KES_SERVER,
# MINIO_KES_SERVER, MINIO_KMS_KES_ENDPOINT) is set, key names: those are asked of the
# server by 'kes completion __complete-keys', which gives up after one second and
# prints nothing on failure.

@DATA@

# Reads the words before the cursor (_kes_words, the last one is being completed):
# the command path they name, how many arguments follow it, and -k/--insecure.
_kes_scan() {
    _kes_path='' _kes_nargs=0 _kes_insecure=''
    local i word ended=0 last=$((${#_kes_words[@]} - 1))
    for ((i = 1; i < last; i++)); do
        word=${_kes_words[i]}
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

# Key names that start with $1, from the server; nothing without a server variable.
_kes_keys() {
    [[ -n ${KES_SERVER+set}${MINIO_KES_SERVER+set}${MINIO_KMS_KES_ENDPOINT+set} ]] || return 0
    "${_kes_words[0]}" completion __complete-keys $_kes_insecure -- "$1" 2>/dev/null </dev/null
}

# Adds the candidates of kind $1 (file, text, keys, "choice a b") for the word $2.
# File and key names are split at newlines only; names of commands, flags and
# choices never contain blanks.
_kes_candidates() {
    local IFS=$'\n'
    case $1 in
    file)
        compopt -o filenames 2>/dev/null
        COMPREPLY+=($(compgen -f -- "$2"))
        ;;
    keys) COMPREPLY+=($(compgen -W "$(_kes_keys "$2")" -- "$2")) ;;
    choice\ *)
        IFS=$' \t\n'
        COMPREPLY+=($(compgen -W "${1#choice }" -- "$2"))
        ;;
    esac
}

_kes() {
    local line=${COMP_LINE:0:COMP_POINT} cur prev REPLY
    local _kes_path _kes_nargs _kes_insecure
    local -a _kes_words
    read -ra _kes_words <<<"$line"
    if [[ ${#_kes_words[@]} -eq 0 || $line == *[[:space:]] ]]; then _kes_words+=(''); fi
    cur=${_kes_words[${#_kes_words[@]} - 1]}
    prev=''
    if ((${#_kes_words[@]} > 2)); then prev=${_kes_words[${#_kes_words[@]} - 2]}; fi
    _kes_scan
    COMPREPLY=()

    # The value of a flag: "--flag=value" (bash completes the part after "=") or the
    # word after "--flag".
    if [[ $cur == --*=* ]]; then
        _kes_value "$_kes_path" "${cur%%=*}"
        _kes_candidates "$REPLY" "${cur#*=}"
        return 0
    fi
    if [[ $prev == -* && $prev != *=* && $prev != -- ]]; then
        _kes_value "$_kes_path" "$prev"
        if [[ -n $REPLY ]]; then
            _kes_candidates "$REPLY" "$cur"
            return 0
        fi
    fi
    if [[ $cur == -* ]]; then
        _kes_flags "$_kes_path"
        COMPREPLY=($(compgen -W "$REPLY" -- "$cur"))
        return 0
    fi
    if ((_kes_nargs == 0)); then
        _kes_commands "$_kes_path"
        COMPREPLY=($(compgen -W "$REPLY" -- "$cur"))
    fi
    _kes_args "$_kes_path"
    case $REPLY in
    keys...) _kes_candidates keys "$cur" ;;
    file) _kes_candidates file "$cur" ;;
    ?*) if ((_kes_nargs == 0)); then _kes_candidates "$REPLY" "$cur"; fi ;;
    esac
    return 0
}

complete -F _kes kes
